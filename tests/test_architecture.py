"""The import rules of docs/architecture.md, checked on the source (an AST walk: no import runs).

Every import of one of our packages from another must be allowed by the table; the known
exceptions are listed by module so that they cannot spread.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "convert", "calibration", "reference_model", "sim", "simrobot", "firmware_bridge")
CONTRACT = "edge.contract"

# layer -> the layers it may import ("edge" is edge/ without edge/contract)
ALLOWED = {
    CONTRACT: set(),
    "firmware_bridge": set(),
    "sim": {CONTRACT},
    "edge": {CONTRACT, "firmware_bridge"},
    "simrobot": {CONTRACT, "edge", "sim", "firmware_bridge"},
    "calibration": {CONTRACT, "edge"},
    "convert": {CONTRACT, "edge", "calibration", "torch"},
    "reference_model": {CONTRACT, "edge", "sim", "calibration", "torch"},
}
# (importing module, imported layer): the exceptions docs/architecture.md names, to be removed by issue 19
KNOWN_EXCEPTIONS = {
    ("firmware_bridge.cli", "edge"),
}


def _layer(module: str) -> str | None:
    if module == CONTRACT or module.startswith(CONTRACT + "."):
        return CONTRACT
    top = module.split(".")[0]
    return top if top in PACKAGES or top == "torch" else None


def _imports():
    """(importing module, imported module) for every absolute import in our packages."""
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    yield from ((module, a.name) for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield module, node.module


def test_every_cross_package_import_is_allowed_by_docs_architecture():
    broken = set()
    for importer, imported in _imports():
        source, target = _layer(importer), _layer(imported)
        if target is None or target == source:
            continue
        if target not in ALLOWED[source] and (importer, target) not in KNOWN_EXCEPTIONS:
            broken.add(f"{importer} imports {imported} ({source} may import {sorted(ALLOWED[source]) or 'nothing'})")
    assert not broken, "\n".join(sorted(broken))


def test_the_known_exceptions_are_still_needed():
    """An exception that no longer occurs must leave the list (and docs/architecture.md)."""
    seen = {(importer, _layer(imported)) for importer, imported in _imports()}
    assert not KNOWN_EXCEPTIONS - seen, f"remove from KNOWN_EXCEPTIONS: {sorted(KNOWN_EXCEPTIONS - seen)}"


def test_the_rules_table_names_every_package():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for layer in ALLOWED:
        assert f"`{layer.replace('.', '/')}/`" in text or f"`{layer}/`" in text, layer
    for importer, target in KNOWN_EXCEPTIONS:
        assert f"`{importer}`" in text or importer.rsplit(".", 1)[-1] in text, importer


def test_every_edge_module_imports_without_sim_or_simrobot():
    """In a fresh interpreter where ``import sim`` and ``import simrobot`` fail, as on a robot without them."""
    import subprocess
    import sys

    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "edge").rglob("*.py"))
    script = (
        "import importlib, sys\n"
        "sys.modules['sim'] = None\nsys.modules['simrobot'] = None\n"  # None: ImportError on import
        f"failed = []\n"
        f"for name in {modules!r}:\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ImportError as exc:\n        failed.append(f'{name}: {exc}')\n"
        "    except Exception:\n        pass  # a missing optional device library is not what this checks\n"
        "print('\\n'.join(failed))\n"
        "assert not any('halted' in f for f in failed), failed\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
