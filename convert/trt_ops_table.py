"""Generate ``convert/trt_ops/trt-X.json`` from ONNX-TensorRT's ``docs/operators.md``.

The TensorRT compatibility check (``convert.trt_check``) reads its operator
tables from JSON written by this module, never from a hand-typed list, so a
new TensorRT release is one command away and the committed tables can be
proved to be what the source says (``tests/test_trt_check.py`` regenerates
them from the mirror when it is there)::

    git -C ONNX_TENSORRT show 10.1-GA:docs/operators.md > operators.md
    python -m convert.trt_ops_table operators.md --version 10.1 \\
        --source "onnx/onnx-tensorrt@<commit> docs/operators.md" --out convert/trt_ops/trt-10.1.json

The JSON keeps each row's text as the source writes it (the checker parses the
restriction text where it acts on it); only whitespace and the empty entries of
a trailing comma are dropped, and the spelling slips in ``TYPE_TYPOS`` fixed.
Standard library only: this runs anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

# Spelling slips in the source's "Supported Types" column (10.1-GA: ConstantOfShape lists "INF64").
TYPE_TYPOS = {"INF64": "INT64"}
# The header sentence: "... supports operators in the inclusive range of opset 9 to opset 20" (9.x, 10.x)
# or "... supports operators up to Opset 17" (8.x, which states no lower bound).
_RANGE = re.compile(r"inclusive range of opset (\d+) to opset (\d+)", re.IGNORECASE)
_UP_TO = re.compile(r"supports operators up to opset (\d+)", re.IGNORECASE)
# "TensorRT will attempt to cast down INT64 to INT32 and DOUBLE down to FLOAT" (8.6) /
# "cast DOUBLE down to FLOAT" (10.x): the types the parser narrows itself.
_CAST_DOWN = re.compile(r"down (\w+) to (\w+)|(\w+) down to (\w+)")
DATA_TYPES_SENTENCE = "TensorRT supports the following ONNX data types"
_TABLE_NAMES = {"FLOAT": "FP32", "FLOAT32": "FP32", "FLOAT16": "FP16", "BFLOAT16": "BF16"}


class TableFormatError(ValueError):
    """The markdown is not an ONNX-TensorRT operator table (no header row, no opset sentence)."""


def parse_operators_md(text: str, version: str, source: str) -> dict:
    """Parse ONNX-TensorRT's ``docs/operators.md`` into the checker's JSON table.

    Returns ``{"tensorrt", "source", "opset_range", "data_types_note", "notes",
    "casts_down", "ops"}``; ``opset_range`` is ``[low, high]`` with ``low`` None
    when the source states only an upper bound.

    Raises:
        TableFormatError: no opset sentence or no operator rows.
    """
    if m := _RANGE.search(text):
        opset_range = [int(m.group(1)), int(m.group(2))]
    elif m := _UP_TO.search(text):
        opset_range = [None, int(m.group(1))]
    else:
        raise TableFormatError("no 'supports operators ... opset N' sentence: is this docs/operators.md?")
    lines = [line.strip() for line in text.splitlines()]
    data_types = next((line for line in lines if line.startswith(DATA_TYPES_SENTENCE)), "")
    notes = [line.lstrip("> ").removeprefix("Note: ") for line in lines if line.startswith("> Note:")]
    casts: dict[str, str] = {}
    for note in (data_types, *notes):
        for m in _CAST_DOWN.finditer(note):
            wide, narrow = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
            casts[_TABLE_NAMES.get(wide, wide)] = _TABLE_NAMES.get(narrow, narrow)
    ops: dict[str, dict] = {}
    in_table = False
    for line in lines:
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == "Operator":
            in_table = True
            continue
        if not in_table or set(cells[0]) <= set("-: "):
            continue
        op, supported = cells[0], cells[1] if len(cells) > 1 else ""
        listed = (s.strip() for s in (cells[2] if len(cells) > 2 else "").split(","))
        types = [TYPE_TYPOS.get(t, t) for t in listed if t]
        restrictions = " | ".join(c for c in cells[3:] if c)
        ops[op] = {"supported": supported.upper() == "Y", "types": types, "restrictions": restrictions}
    if not ops:
        raise TableFormatError("no '| Operator | Supported | Supported Types | Restrictions |' table rows")
    return {"tensorrt": version, "source": source, "opset_range": opset_range, "data_types_note": data_types,
            "notes": notes, "casts_down": casts, "ops": ops}


def dumps(table: dict) -> str:
    """The committed form: keys in parsed order, one operator a line (diffs show which rows changed)."""
    head = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in table.items() if k != "ops"]
    rows = [f"  {json.dumps(op)}: {json.dumps(row, ensure_ascii=False)}" for op, row in table["ops"].items()]
    return "{\n" + ",\n".join(head) + ',\n "ops": {\n' + ",\n".join(rows) + "\n }\n}\n"


def _write_atomically(path: Path, text: str) -> None:
    # A half-written table would make every later check wrong: write aside, then rename.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a table is data for everyone
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("operators_md", help="ONNX-TensorRT docs/operators.md ('-' for standard input)")
    p.add_argument("--version", required=True, help="the TensorRT release the table belongs to, e.g. 10.1")
    p.add_argument("--source", required=True,
                   help='where it came from: "onnx/onnx-tensorrt@<commit> docs/operators.md"')
    p.add_argument("--out", required=True, help="the JSON file to write, e.g. convert/trt_ops/trt-10.1.json")
    args = p.parse_args(argv)
    try:
        path = args.operators_md
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        table = parse_operators_md(text, args.version, args.source)
    except (OSError, UnicodeDecodeError, TableFormatError) as exc:
        print(f"trt_ops_table: error: {args.operators_md}: {exc}", file=sys.stderr)
        return 2
    _write_atomically(Path(args.out), dumps(table))
    print(f"wrote {args.out}: {len(table['ops'])} operators "
          f"({sum(o['supported'] for o in table['ops'].values())} supported), opsets {table['opset_range']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
