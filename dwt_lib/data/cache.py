"""The processed-data cache: one checksummed folder per data hash, opened memory-mapped, healed when damaged.

``<cache root>/data-<hash>/`` holds ``train.npy`` and ``validation.npy`` (packed token blocks, uint16 when
the vocabulary fits), ``tokenizer/``, ``stats.json`` and, written last, ``manifest.json``: the size and
sha256 of every other file. The manifest is the commit marker (as torchtitan's metadata file): a folder
without a valid one is not a cache entry. A build goes to ``data-<hash>.tmp-<pid>/`` and is renamed into
place, so a killed build never leaves a half cache; the next build removes the folders of dead processes.
An entry whose files do not match its manifest (deleted, truncated, overwritten) is moved aside to
``data-<hash>.damaged-<time>/`` (kept for inspection, never deleted) and rebuilt, with a warning.

Blocks are opened read-only with ``numpy.load(mmap_mode="r")``: every training process maps the same file,
so 8 processes share one copy in the page cache (Megatron's ``_MMapBinReader`` does the same), and a batch
is converted to int64 only when it is read (:class:`TokenBlocks`).
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from dwt_lib.core import io
from dwt_lib.core.io import sha256_file

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class CacheRepairWarning(UserWarning):
    """A damaged cache entry was moved aside and is being rebuilt."""


# ----------------------------------------------------------------------------- checksums

def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path) -> dict:
    """Fsync every file of ``folder``, then write ``manifest.json`` (size + sha256 of each) atomically, last."""
    files = {}
    for p in _files(folder):
        with open(p, "rb") as f:
            os.fsync(f.fileno())
        files[p.relative_to(folder).as_posix()] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    man = {"manifest_version": MANIFEST_VERSION, "files": files}
    tmp = folder / f".{MANIFEST}.tmp"
    with open(tmp, "w") as f:
        json.dump(man, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    return man


def verify(folder: Path, checksums: bool = True) -> Optional[str]:
    """None when ``folder`` is a complete, undamaged entry; else the reason, naming the file.

    Sizes are always checked; ``checksums`` also re-hashes every file (about 1 s per GB).
    """
    m = folder / MANIFEST
    if not m.is_file():
        return f"no {MANIFEST} (an unfinished build, or a cache written before checksums)"
    try:
        files = json.loads(m.read_text())["files"]
        assert isinstance(files, dict) and files
    except Exception as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__})"
    for rel, want in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if p.stat().st_size != want["bytes"]:
            return f"{rel} has {p.stat().st_size} bytes, the manifest says {want['bytes']}"
        if checksums and sha256_file(p) != want["sha256"]:
            return f"{rel} does not match its sha256 in {MANIFEST}"
    return None


def move_aside(folder: Path, reason: str) -> Path:
    """Move a damaged entry aside to ``<name>.damaged-<UTC time>-<pid>`` (kept, not deleted) and warn."""
    dest = io.move_aside(folder, stamped=True)
    warnings.warn(f"data cache {folder} is damaged ({reason}): moved aside to {dest.name} and rebuilding; "
                  f"delete {dest} once you no longer need it", CacheRepairWarning, stacklevel=3)
    return dest


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # exists, owned by someone else
        return True
    return True


def remove_stale_builds(root: Path) -> list[Path]:
    """Remove ``data-*.tmp-<pid>/`` build folders whose process is gone (a killed build); returns them."""
    gone = []
    for d in root.glob("data-*.tmp-*"):
        pid = d.name.rsplit(".tmp-", 1)[1]
        if d.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


# ----------------------------------------------------------------------------- memory-mapped blocks

class TokenBlocks:
    """Read-only view of an ``[N, L]`` block array on disk (``numpy.load(mmap_mode="r")``).

    Indexing (an int, a slice, a list/array/LongTensor of rows) returns a LongTensor copy of just those
    rows: the file stays shared in the page cache and only what a batch touches is read. Pickles as its
    path, so each DataLoader worker or process maps the file itself.
    """

    def __init__(self, source: Union[str, Path, np.ndarray]):
        if isinstance(source, np.ndarray):
            self.path, self.array = None, source
        else:
            self.path = Path(source)
            self.array = np.load(self.path, mmap_mode="r")
        if self.array.ndim != 2:
            raise ValueError(f"{self.path}: expected a 2-d block array, got shape {self.array.shape}")

    shape = property(lambda self: tuple(self.array.shape))
    dtype = torch.long                       # what indexing returns (the file holds uint16 or int32)
    nbytes = property(lambda self: int(self.array.nbytes))

    def __len__(self) -> int:
        return self.array.shape[0]

    def __getitem__(self, idx) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.cpu().numpy()
        return torch.from_numpy(np.asarray(self.array[idx], dtype=np.int64))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def access(self) -> dict:
        """How this process holds the blocks: ``memmap`` (a ``np.memmap`` of the file, not a private copy),
        ``read_only``, ``file`` (``<cache folder>/<file>``, no absolute path) and the file's ``inode``, so
        records from several processes show they map one file."""
        fn = getattr(self.array, "filename", None)
        return {"memmap": isinstance(self.array, np.memmap), "read_only": not self.array.flags.writeable,
                "file": f"{Path(fn).parent.name}/{Path(fn).name}" if fn else None,
                "inode": os.stat(fn).st_ino if fn else None}

    def __reduce__(self):
        if self.path is None:
            return (TokenBlocks, (np.asarray(self.array),))
        return (TokenBlocks, (self.path,))

    def __repr__(self) -> str:
        return f"TokenBlocks({self.path or 'in memory'}, shape={self.shape}, stored as {self.array.dtype})"
