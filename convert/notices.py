"""Licences of pretrained parts that a model carries, written into the bundle beside the model.

A model factory's model may have a ``third_party()`` method returning one dict
per pretrained part made by others: ``name``, ``author``, ``license`` (SPDX),
``source``, ``sha256``, ``notice`` (text) and ``license_file`` (path to the
licence text). The bundle then holds a ``NOTICE`` with every notice, each
licence text under its own file name, and the manifest's provenance lists the
parts, so whoever deploys the bundle can see what it contains and under which
terms (Apache-2.0 section 4 asks for the licence and notices to travel with it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from convert.errors import ConvertError

NOTICE_FILE = "NOTICE"
_FIELDS = ("name", "author", "license", "source", "sha256")


def third_party_parts(model) -> list[dict]:
    """The model's ``third_party()`` entries (none when it has no such method), checked."""
    method = getattr(model, "third_party", None)
    parts = list(method()) if callable(method) else []
    for part in parts:
        missing = [k for k in (*_FIELDS, "notice", "license_file") if not part.get(k)]
        if missing:
            raise ConvertError(f"the model's third_party() entry {part.get('name', '?')!r} lacks {missing}; "
                               "every pretrained part needs its licence, source and notice")
        if not Path(part["license_file"]).is_file():
            raise ConvertError(f"licence text {part['license_file']} of {part['name']!r} is missing; "
                               "reinstall the package that ships it")
    return parts


def write_notices(parts: list[dict], folder: Path) -> list[dict]:
    """Write NOTICE and the licence texts into ``folder``; returns the manifest's provenance entries."""
    if not parts:
        return []
    folder = Path(folder)
    (folder / NOTICE_FILE).write_text("\n".join(p["notice"] for p in parts))
    entries = []
    for part in parts:
        license_name = Path(part["license_file"]).name
        shutil.copyfile(part["license_file"], folder / license_name)
        entries.append({**{k: part[k] for k in _FIELDS}, "license_file": license_name, "notice_file": NOTICE_FILE})
    return entries
