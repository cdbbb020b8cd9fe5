"""sha256 records of saved model folders (a run's ``model/`` and ``snapshots/frac-*``), like the checkpoints'.

:func:`record` writes ``sha256.json`` (sha256 and size of every file) into a model folder when it is saved, before
the folder is moved into place; :func:`problem` says what is wrong with one (missing, a file missing, truncated or
changed), and is called before a dependent run reads it (a DWT run its teacher, a fine-tuning run its snapshot)
and by ``dwt runs``. A folder saved before these records existed is checked as far as it can be: its files are
there and ``model.safetensors`` has a readable header.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Iterable, Optional

from dwt_lib.core.io import atomic_write_json, sha256_file

RECORD = "sha256.json"


def record(folder: Path) -> Path:
    """Write ``<folder>/sha256.json``: ``{"files": {relative path: {sha256, bytes}}}`` of every file in it."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != RECORD}
    atomic_write_json(folder / RECORD, {"version": 1, "files": files})
    return folder / RECORD


def _safetensors_header_ok(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            if not 0 < n <= min(path.stat().st_size - 8, 100 << 20):
                return False
            return isinstance(json.loads(f.read(n)), dict)
    except (OSError, struct.error, ValueError):
        return False


def problem(folder: Path, remembered: bool = True, checksums: bool = True) -> Optional[str]:
    """What is wrong with a saved model folder (``"missing"``, ``"model.safetensors: sha256 differs from ..."``),
    or None. ``remembered``: a file this process already hashed, unchanged since (inode, size, mtime), is not
    read again. ``checksums=False``: files and sizes only, nothing hashed (``dwt runs`` lists every run of a
    profile: hashing every model and snapshot at paper scale reads tens of GB per call)."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        return "missing"
    try:
        files = json.loads((folder / RECORD).read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError
    except FileNotFoundError:                    # saved before the records: what can be checked without one
        weights = folder / "model.safetensors"
        if weights.exists() and not _safetensors_header_ok(weights):
            return "model.safetensors is damaged (its header does not read)"
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return f"{RECORD} is damaged"
    for rel, e in files.items():
        p = folder / rel
        if not isinstance(e, dict) or not p.is_file():
            return f"{rel} missing" if isinstance(e, dict) else f"{RECORD} is damaged"
        size = p.stat().st_size
        if size != e.get("bytes"):
            return f"{rel} is damaged ({'truncated: ' if size < (e.get('bytes') or 0) else 'size '}{size} of " \
                   f"{e.get('bytes')} bytes)"
        if not checksums:                        # what can be seen without reading the file
            if p.suffix == ".safetensors" and not _safetensors_header_ok(p):
                return f"{rel} is damaged (its header does not read)"
        elif sha256_file(p, remembered=remembered) != e.get("sha256"):
            return f"{rel} is damaged (sha256 differs from the one recorded when it was saved)"
    return None


def folders_problem(run_dir: Path, rels: Iterable[str], checksums: bool = True) -> Optional[str]:
    """The first problem among a run's saved model folders ``rels`` (``model``, ``snapshots/frac-0.50``), said
    with the folder: ``model/ missing`` or ``snapshots/frac-0.50/model.safetensors is damaged (...)``.
    ``checksums``: as :func:`problem`."""
    for rel in rels:
        why = problem(Path(run_dir) / rel, checksums=checksums)
        if why == "missing":
            return f"{rel}/ missing"
        if why:
            return f"{rel}/{why}"
    return None
