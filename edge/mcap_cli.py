"""``voxedge record-mcap``: registered by the ``voxedge`` entry point (the work is in ``edge.mcap_record``)."""

from __future__ import annotations

import argparse
import sys
import time

from edge.mcap_record import DEFAULT_CHUNK_MS, DEFAULT_JPEG_QUALITY

PROGRESS_EVERY_S = 1.0


def _cmd_record_mcap(args: argparse.Namespace) -> int:
    from edge.mcap_record import McapRecordError, write_mcap

    last = [time.monotonic()]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_S and done < total:
            last[0] = now
            print(f"voxedge record-mcap: {done}/{total} samples", file=sys.stderr, flush=True)

    try:
        result = write_mcap(args.audit_dir, args.out, chunk_ms=args.audio_chunk_ms, jpeg_quality=args.jpeg_quality,
                            force=args.force, progress=progress)
    except McapRecordError as exc:
        print(f"voxedge record-mcap: error: {exc}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"voxedge record-mcap: warning: {warning}", file=sys.stderr)
    topics = ", ".join(f"{topic} {n}" for topic, n in sorted(result.messages.items()))
    size_mb = result.path.stat().st_size / 1024**2
    print(f"wrote {result.path} ({size_mb:.1f} MB): {result.samples} sample(s) over "
          f"{(result.end_ns - result.start_ns) / 1e9:.1f} s; messages: {topics}. Open it in Foxglove, or: "
          f"ros2 bag info {result.path}")
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _quality(text: str) -> int:
    value = _positive(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"{value} is above 100")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``record-mcap`` on the ``voxedge`` parser."""
    p = sub.add_parser(
        "record-mcap", help="write an audit log as an MCAP recording (ROS 2 messages) for Foxglove and ros2 bag",
        description="Convert an audit log (serve --audit-log DIR) into one MCAP file with ROS 2 messages: "
                    "/camera/image/compressed (sensor_msgs/msg/CompressedImage, JPEG), /audio "
                    "(audio_common_msgs/msg/AudioDataStamped, 16-bit PCM) with /audio/info, and "
                    "/voxedge/command (std_msgs/msg/String, the decision as JSON), timed by the robot's "
                    "monotonic clock. Needs: pip install mcap mcap-ros2-support")
    p.add_argument("audit_dir", metavar="AUDIT_DIR", help="the audit log directory (serve --audit-log DIR)")
    p.add_argument("out", metavar="OUT.mcap", help="the MCAP file to write; written beside itself and renamed "
                                                   "into place, so an earlier recording is replaced whole")
    p.add_argument("--force", action="store_true", help="replace OUT.mcap even when it is an existing file that is "
                                                        "not an MCAP recording")
    p.add_argument("--audio-chunk-ms", type=_positive, default=DEFAULT_CHUNK_MS,
                   help="length of each /audio message in milliseconds (default: %(default)s)")
    p.add_argument("--jpeg-quality", type=_quality, default=DEFAULT_JPEG_QUALITY,
                   help="JPEG quality of the camera frames, 1 to 100 (default: %(default)s)")
    p.set_defaults(func=_cmd_record_mcap)
