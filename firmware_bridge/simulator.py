"""The firmware core built for this host: build helpers and the ``McuSimulator`` process wrapper.

``build_simulator()`` compiles ``voxedge-mcu-sim`` (the real C core plus a
pseudo-terminal, physics and fault-injection shell) with gcc into a git-ignored
build directory, only when a source, a flag or the compiler changed.
``build_harness()`` does the same for the line-oriented test driver.

``McuSimulator`` starts the program, reads the pseudo-terminal path it prints,
keeps a stable symlink to it (re-pointed on every replug, removed on exit) and
stops it cleanly. The simulator exits by itself when its parent dies (it polls
``getppid()``; ``PR_SET_PDEATHSIG`` is not used because it fires when the
*thread* that forked exits, which would kill a simulator started from a
short-lived thread).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_bridge.errors import InvalidValueError, SimulatorError

if TYPE_CHECKING:
    from typing_extensions import Self

FIRMWARE_DIR = Path(__file__).resolve().parent / "firmware"
CORE_SOURCES = ("core/vx_codec.c", "core/vx_core.c")
CORE_HEADERS = ("core/protocol_gen.h", "core/vx_codec.h", "core/vx_core.h", "core/vx_hal.h")
SIM_SOURCES = ("sim/mcu_sim.c",)
HARNESS_SOURCES = ("tools/vx_harness.c",)
SIM_NAME = "voxedge-mcu-sim"
HARNESS_NAME = "vx-harness"

WARNINGS = ("-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic")
RELEASE_FLAGS = ("-O2",)
# -fno-sanitize-recover makes UBSan findings fatal, so a test sees a non-zero exit.
SANITIZE_FLAGS = ("-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                  "-fno-sanitize-recover=all")

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0


def find_compiler() -> str | None:
    """Path of the C compiler to use ($CC, else gcc, else cc), or None when there is none."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc) or (cc if os.path.exists(cc) else None)
    return shutil.which("gcc") or shutil.which("cc")


def default_build_dir() -> Path:
    """Where binaries go: $VOXEDGE_FIRMWARE_BUILD_DIR, else firmware/build/ (or a user cache if read-only)."""
    env = os.environ.get("VOXEDGE_FIRMWARE_BUILD_DIR")
    if env:
        return Path(env)
    local = FIRMWARE_DIR / "build"
    if os.access(FIRMWARE_DIR, os.W_OK):
        return local
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "voxedge" / "firmware-build"


def _compiler_identity(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SimulatorError(f"C compiler {cc!r} does not run ({exc}): install gcc or set CC") from exc
    return out.stdout.splitlines()[0] if out.stdout else cc


def _build(name: str, sources: tuple[str, ...], *, sanitize: bool, build_dir: Path | None,
           extra_files: dict[str, str] | None = None, defines: tuple[str, ...] = ()) -> Path:
    cc = find_compiler()
    if cc is None:
        raise SimulatorError("no C compiler found (looked for $CC, gcc, cc): install gcc, e.g. apt install gcc")
    variant = "asan" if sanitize else "release"
    out_dir = (build_dir or default_build_dir()) / variant
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = (*WARNINGS, *(SANITIZE_FLAGS if sanitize else RELEASE_FLAGS))
    digest = hashlib.sha256()
    for rel in (*sources, *CORE_SOURCES, *CORE_HEADERS):
        digest.update(rel.encode() + b"\0" + (FIRMWARE_DIR / rel).read_bytes())
    for fname, text in sorted((extra_files or {}).items()):
        digest.update(fname.encode() + b"\0" + text.encode())
    digest.update(repr((flags, defines, cc, _compiler_identity(cc))).encode())
    stamp = digest.hexdigest()
    binary = out_dir / name
    stamp_path = out_dir / f"{name}.stamp"
    # One builder at a time per directory (tests and the CLI may race); others wait, then reuse.
    with open(out_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.exists() and stamp_path.exists() and stamp_path.read_text().strip() == stamp:
            return binary
        gen_dir = out_dir / f"{name}.gen"
        gen_dir.mkdir(exist_ok=True)
        for fname, text in (extra_files or {}).items():
            (gen_dir / fname).write_text(text, encoding="utf-8")
        tmp = out_dir / f".{name}.{os.getpid()}.tmp"
        cmd = [cc, *flags, f"-DVX_BUILD_ID=\"{name}+{stamp[:8]}\"", *defines, f"-I{gen_dir}", f"-I{FIRMWARE_DIR / 'core'}",
               *(str(FIRMWARE_DIR / s) for s in (*CORE_SOURCES, *sources)), "-lm", "-o", str(tmp)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SimulatorError(f"compiling {name} failed to run: {exc}") from exc
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise SimulatorError(f"compiling {name} failed (exit {proc.returncode}):\n{proc.stderr.strip()}\n"
                                 f"command: {' '.join(cmd)}")
        os.replace(tmp, binary)
        stamp_path.write_text(stamp + "\n")
    return binary


def build_simulator(*, sanitize: bool = False, build_dir: Path | None = None,
                    defines: tuple[str, ...] = ()) -> Path:
    """Compile ``voxedge-mcu-sim`` if its sources, flags or compiler changed; return the binary's path.

    Args:
        sanitize: build with ``-fsanitize=address,undefined`` (into ``<build_dir>/asan``).
        build_dir: defaults to :func:`default_build_dir`.
        defines: extra ``-D`` options (tests emulate older firmware with them; give those their own
            ``build_dir``).

    Raises:
        SimulatorError: no compiler, or the compilation failed (the message carries gcc's output).
    """
    return _build(SIM_NAME, SIM_SOURCES, sanitize=sanitize, build_dir=build_dir, defines=defines)


def build_harness(*, sanitize: bool = False, build_dir: Path | None = None) -> Path:
    """Compile the test driver ``vx-harness`` (see ``firmware/tools/vx_harness.c``); return its path.

    Raises:
        SimulatorError: no compiler, or the compilation failed.
    """
    from firmware_bridge.spec import generate_c_printer

    return _build(HARNESS_NAME, HARNESS_SOURCES, sanitize=sanitize, build_dir=build_dir,
                  extra_files={"vx_print_gen.h": generate_c_printer()})


@dataclass(frozen=True)
class FaultConfig:
    """Fault injection of the simulated link (probabilities per frame or per byte, in [0, 1]).

    Faults apply in ``direction`` ("rx": host to MCU, "tx": MCU to host, or "both").
    ``unplug_every_s`` > 0 closes the pseudo-terminal that often and opens a new
    one ``unplug_for_s`` later (the port symlink is removed meanwhile).
    """

    seed: int = 1
    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    delay_prob: float = 0.0
    delay_ms: float = 0.0
    byte_drop: float = 0.0
    byte_corrupt: float = 0.0
    direction: str = "both"
    unplug_every_s: float = 0.0
    unplug_for_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "duplicate", "delay_prob", "byte_drop", "byte_corrupt"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidValueError(f"FaultConfig.{name}={value!r} is not a probability: use a value in [0, 1]")
        if self.direction not in ("rx", "tx", "both"):
            raise InvalidValueError(f"FaultConfig.direction={self.direction!r}: use 'rx', 'tx' or 'both'")
        for name in ("delay_ms", "unplug_every_s", "unplug_for_s"):
            if getattr(self, name) < 0:
                raise InvalidValueError(f"FaultConfig.{name}={getattr(self, name)!r} must not be negative")

    def args(self) -> list[str]:
        """Command-line options of ``voxedge-mcu-sim`` for this configuration."""
        return ["--seed", str(self.seed), "--drop", repr(self.drop), "--corrupt", repr(self.corrupt),
                "--duplicate", repr(self.duplicate), "--delay-prob", repr(self.delay_prob),
                "--delay-ms", repr(self.delay_ms), "--byte-drop", repr(self.byte_drop),
                "--byte-corrupt", repr(self.byte_corrupt), "--fault-dir", self.direction,
                "--unplug-every", repr(self.unplug_every_s), "--unplug-for", repr(self.unplug_for_s)]


@dataclass(frozen=True)
class MotorSample:
    """One line of the simulator's --motor-log."""

    t: float
    duty_left: float
    duty_right: float
    wheel_left_m_s: float
    wheel_right_m_s: float
    x: float
    y: float
    theta: float
    state: int

    @property
    def stopped(self) -> bool:
        """Both motor commands and both physical wheel speeds are zero."""
        return self.duty_left == self.duty_right == self.wheel_left_m_s == self.wheel_right_m_s == 0.0


def read_motor_log(path: Path) -> list[MotorSample]:
    """Parse the simulator's motor log (complete lines only)."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 9:
            continue
        out.append(MotorSample(*(float(p) for p in parts[:8]), int(parts[8])))
    return out


def motors_stopped_at(samples: list[MotorSample], since: float, until: float) -> float | None:
    """The first time at or after ``since`` from which the motors stay stopped through ``until``; None if never.

    What the failsafe measurements report: a kill at ``since``, the motors at zero from the returned time on.
    """
    stop_at = None
    for s in samples:
        if s.t > until:
            break
        if s.t < since:
            continue
        if s.stopped:
            stop_at = s.t if stop_at is None else stop_at
        else:
            stop_at = None
    return stop_at


def _stop_process(proc: subprocess.Popen, timeout_s: float) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass


@dataclass
class _PtyState:
    path: str | None = None
    plugs: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)


class McuSimulator:
    """Runs ``voxedge-mcu-sim`` as a child process and exposes its serial port path.

    Use as a context manager (or call :meth:`start` / :meth:`stop`)::

        with McuSimulator() as sim:
            with Link(sim.port) as link:
                ...

    Args:
        faults: link faults to inject (none by default).
        port_link: path of the stable symlink to the pseudo-terminal (default: in a private temp dir).
        motor_log / event_log: files the simulator writes (motor state over time; protocol events).
        schema_hash: override the firmware's schema hash (to test the mismatch path).
        clock_ppm: make the MCU clock run fast (+) or slow (-) by this much.
        sanitize: run the ``-fsanitize=address,undefined`` build.
        binary: an already built simulator (skips :func:`build_simulator`).
    """

    def __init__(self, *, faults: FaultConfig | None = None, port_link: str | os.PathLike | None = None,
                 motor_log: str | os.PathLike | None = None, event_log: str | os.PathLike | None = None,
                 schema_hash: int | None = None, clock_ppm: float = 0.0, sanitize: bool = False,
                 binary: str | os.PathLike | None = None) -> None:
        self.faults = faults or FaultConfig()
        self._port_link = Path(port_link) if port_link is not None else None
        self.motor_log = Path(motor_log) if motor_log is not None else None
        self.event_log = Path(event_log) if event_log is not None else None
        self.schema_hash = schema_hash
        self.clock_ppm = clock_ppm
        self.sanitize = sanitize
        self._binary = Path(binary) if binary is not None else None
        self._proc: subprocess.Popen | None = None
        self._tmpdir: tempfile.TemporaryDirectory | None = None
        self._stderr_path: Path | None = None
        self._reader: threading.Thread | None = None
        self._pty = _PtyState()
        self._finalizer: weakref.finalize | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def is_running(self) -> bool:
        """True while the simulator process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """Process id of the running simulator.

        Raises:
            SimulatorError: not started.
        """
        if self._proc is None:
            raise SimulatorError("the simulator is not started: call start() first")
        return self._proc.pid

    @property
    def port(self) -> str:
        """Stable serial port path (a symlink to the current pseudo-terminal) to give to ``Link``."""
        if self._port_link is None:
            raise SimulatorError("the simulator is not started: call start() first")
        return str(self._port_link)

    @property
    def slave_path(self) -> str | None:
        """The current pseudo-terminal (``/dev/pts/N``), or None before the first plug."""
        return self._pty.path

    @property
    def plug_count(self) -> int:
        """How many times a pseudo-terminal was opened (1 after start, +1 per replug)."""
        return self._pty.plugs

    def start(self, timeout_s: float = START_TIMEOUT_S) -> McuSimulator:
        """Build if needed, start the process and wait until its port exists.

        Raises:
            SimulatorError: already running, build failure, or the process did not come up.
        """
        if self._proc is not None:
            raise SimulatorError("the simulator is already started: stop() it before starting again")
        binary = self._binary or build_simulator(sanitize=self.sanitize)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="voxedge-sim-")
        tmp = Path(self._tmpdir.name)
        if self._port_link is None:
            self._port_link = tmp / "robot"
        self._stderr_path = tmp / "stderr.txt"
        cmd = [str(binary), "--pty-link", str(self._port_link), "--parent-pid", str(os.getpid()),
               "--clock-ppm", repr(self.clock_ppm), *self.faults.args()]
        if self.motor_log is not None:
            cmd += ["--motor-log", str(self.motor_log)]
        if self.event_log is not None:
            cmd += ["--event-log", str(self.event_log)]
        if self.schema_hash is not None:
            cmd += ["--schema-hash", f"{self.schema_hash:08x}"]
        env = dict(os.environ)
        if self.sanitize:
            env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=86")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=87")
        with open(self._stderr_path, "wb") as err:
            try:
                # A new session: a Ctrl-C in the terminal reaches Python, which then stops the simulator
                # in order; the simulator itself exits when its parent dies.
                self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                              start_new_session=True, env=env)
            except OSError as exc:
                self._cleanup_tmp()
                raise SimulatorError(f"cannot start {binary}: {exc}") from exc
        self._finalizer = weakref.finalize(self, _stop_process, self._proc, STOP_TIMEOUT_S)
        self._reader = threading.Thread(target=self._read_stdout, name="mcu-sim-stdout", daemon=True)
        self._reader.start()
        try:
            self.wait_plugged(1, timeout_s)
        except SimulatorError:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``timeout_s``) and clean up; return its exit code."""
        proc = self._proc
        if proc is None:
            return None
        _stop_process(proc, timeout_s)
        if proc.stdout is not None:
            proc.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=timeout_s)
        if self._finalizer is not None:
            self._finalizer.detach()
        # The simulator removes its symlink on a clean exit; after a SIGKILL we do it.
        if self._port_link is not None and self._port_link.is_symlink():
            try:
                if os.readlink(self._port_link) == self._pty.path:
                    self._port_link.unlink()
            except OSError:
                pass
        self._cleanup_tmp()
        return proc.returncode

    def _cleanup_tmp(self) -> None:
        if self._tmpdir is not None:
            if self._stderr_path is not None and self._stderr_path.exists():
                self._stderr_text = self._stderr_path.read_text(errors="replace")
            self._tmpdir.cleanup()
            self._tmpdir = None

    @property
    def returncode(self) -> int | None:
        """Exit status once stopped (None while running)."""
        return None if self._proc is None else self._proc.poll()

    def stderr_text(self) -> str:
        """What the simulator wrote on stderr (sanitizer reports end up here)."""
        if self._tmpdir is not None and self._stderr_path is not None and self._stderr_path.exists():
            return self._stderr_path.read_text(errors="replace")
        return getattr(self, "_stderr_text", "")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- controls of the fake hardware

    def toggle_plug(self) -> None:
        """Unplug the cable (close the pty, remove the symlink), or replug it on a new pty when unplugged."""
        os.kill(self.pid, signal.SIGUSR1)

    def reset_mcu(self) -> None:
        """Reset the MCU: the core restarts from power-on state (disarmed, no session)."""
        os.kill(self.pid, signal.SIGUSR2)

    def wait_plugged(self, plugs: int, timeout_s: float) -> str:
        """Wait until the simulator has opened ``plugs`` pseudo-terminals in total; return the latest path.

        Raises:
            SimulatorError: the process exited or the time ran out.
        """
        deadline = time.monotonic() + timeout_s
        with self._pty.cond:
            while self._pty.plugs < plugs:
                left = deadline - time.monotonic()
                if left <= 0 or (self._proc is not None and self._proc.poll() is not None):
                    raise SimulatorError(
                        f"simulator did not open its pseudo-terminal (plugs={self._pty.plugs}, wanted {plugs}, "
                        f"exit={None if self._proc is None else self._proc.poll()}): {self.stderr_text()[-2000:]}")
                self._pty.cond.wait(min(left, 0.1))
            assert self._pty.path is not None
            return self._pty.path

    def _read_stdout(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        try:
            for raw in proc.stdout:
                text = raw.decode(errors="replace").strip()
                if text.startswith("PTY "):
                    with self._pty.cond:
                        self._pty.path = text[4:]
                        self._pty.plugs += 1
                        self._pty.cond.notify_all()
        except (OSError, ValueError):
            return  # stdout closed by stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m firmware_bridge.simulator [--sanitize]``: build and print the simulator's path."""
    sanitize = "--sanitize" in (argv if argv is not None else sys.argv[1:])
    print(build_simulator(sanitize=sanitize))
    return 0


if __name__ == "__main__":
    sys.exit(main())
