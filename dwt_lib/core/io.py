"""Files the project writes and checks, for every layer: atomic writes (a temp file in the same folder, fsync,
``os.replace``: a kill or a full disk leaves the old file, or none, never half a new one), the one sha256 of a
file, and the one way a damaged file or folder is moved aside (kept for a look, out of a rerun's way)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()      # what open() gives a new file (0644 under the usual umask 022)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and ``os.replace``.

    A kill or a full disk leaves the old file (or none), never half a new one. The file gets
    the mode ``open()`` would give it (``mkstemp`` alone would make it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    """JSON version of :func:`atomic_write_text` (indented, sorted keys)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


_DIGESTS: dict[tuple, str] = {}      # (folder, inode, size, mtime) -> sha256 of files this process hashed


def sha256_file(path: Path, chunk: int = 1 << 22, remembered: bool = False) -> str:
    """sha256 of a file, always read from disk unless ``remembered``: then a digest this process
    computed for the same inode, size and mtime is reused (a save does not hash the previous
    checkpoint again: it was verified at load, or read back when this process wrote it)."""
    st = os.stat(path)
    key = (str(Path(path).resolve().parent), st.st_ino, st.st_size, st.st_mtime_ns)
    if not remembered or key not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def move_aside(path: Path, stamped: bool = False) -> Path:
    """Rename a damaged file or folder out of a rerun's way, kept for a look: ``<name>.damaged``, or with
    ``stamped`` ``<name>.damaged-<UTC time>-<pid>`` (a cache entry can be damaged again after a rebuild)."""
    path = Path(path)
    mark = f".damaged-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}" if stamped else ".damaged"
    aside = path.with_name(path.name + mark)
    os.replace(path, aside)
    return aside
