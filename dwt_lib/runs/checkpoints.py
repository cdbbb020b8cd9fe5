"""Training checkpoints that survive kills, full disks and damaged files.

``<run>/checkpoints/`` holds ``last.pt`` (the newest), ``prev.pt`` (the one before it) and
``manifest.json`` (the sha256, size and step of each). A save serialises the state in memory,
writes ``last.tmp``, reads it back and compares its sha256, records it in the manifest, and only
then moves ``last.pt`` to ``prev.pt`` and ``last.tmp`` to ``last.pt``: at every moment at least
one checkpoint on disk matches a checksum in the manifest. A load takes the newest file whose
checksum is in the manifest; a damaged one (truncated, empty, changed bytes) is moved aside as
``<name>.damaged`` and the one before it is used, with a message naming both. A full disk
leaves no ``last.tmp`` behind and raises :class:`~dwt_lib.core.errors.DiskFullError`.

fairseq writes to ``.tmp`` then renames, torchtitan commits with a metadata file; neither
falls back to the previous checkpoint when the newest is damaged.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from dwt_lib.core.errors import DamagedFileError, DiskFullError, disk_full
from dwt_lib.core.io import atomic_write_json, move_aside, sha256_file

NAMES = ("last.pt", "prev.pt")       # newest first
MANIFEST = "manifest.json"
TMP = "last.tmp"


def write_file(path: Path, data: bytes) -> None:
    """Write and fsync ``data`` (the one place bytes hit the disk: tests patch it to fill the disk)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_manifest(folder: Path) -> Optional[dict]:
    """``{name: {sha256, bytes, step}}`` from the manifest; None when it is missing or unreadable. Malformed
    entries (not an object, no sha256 string) are left out; a manifest with none left counts as unreadable."""
    try:
        files = json.loads((Path(folder) / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, dict):
        return None
    files = {k: e for k, e in files.items() if isinstance(e, dict) and isinstance(e.get("sha256"), str)}
    return files or None


def save(folder: Path, state: dict) -> Path:
    """Write ``state`` (with a ``step``) as ``folder/last.pt``, keeping the previous one as ``prev.pt``."""
    import torch      # here, not at the top: the run registry reads manifests without loading torch
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    tmp, last, prev = folder / TMP, folder / "last.pt", folder / "prev.pt"
    try:
        write_file(tmp, data)
        if sha256_file(tmp) != digest:
            raise DamagedFileError("a checkpoint read back differs from what was written", tmp,
                                   "check the disk; a rerun resumes from the previous checkpoint")
        old = read_manifest(folder) or {}
        files = {"last.pt": {"sha256": digest, "bytes": len(data), "step": state["step"]}}
        if last.exists():           # becomes prev.pt: keep the entry its bytes match
            h = sha256_file(last, remembered=True)
            match = [e for e in old.values() if isinstance(e, dict) and e.get("sha256") == h]
            if match or not old:    # no manifest: a checkpoint from before checksums, loaded fine
                files["prev.pt"] = match[0] if match else {"sha256": h, "bytes": last.stat().st_size}
        elif prev.exists() and "prev.pt" in old:
            files["prev.pt"] = old["prev.pt"]
        atomic_write_json(folder / MANIFEST, {"version": 1, "files": files})
        if last.exists():
            os.replace(last, prev)
        os.replace(tmp, last)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if disk_full(e):
            raise DiskFullError(f"disk full while writing the checkpoint of step {state['step']}", tmp,
                                f"free {len(data) / 1e6:.0f} MB or more (or set DWT_OUTPUTS_DIR to a larger "
                                f"disk) and rerun: it resumes from the previous checkpoint") from e
        raise
    return last


def _why_damaged(path: Path, entry: Optional[dict], known: Optional[set], digest: Optional[str]) -> Optional[str]:
    size = path.stat().st_size
    if size == 0:
        return "empty file"
    if known is None:               # no usable manifest: loading decides
        return None
    if digest in known:
        return None
    if entry and isinstance(entry.get("bytes"), int) and entry["bytes"] and size != entry["bytes"]:
        return f"{'truncated' if size < entry['bytes'] else 'wrong size'}: {size} of {entry['bytes']} bytes"
    return "sha256 differs from the manifest"


def load(folder: Path, log: Callable[[str], None] = print, is_main: bool = True) -> Optional[dict]:
    """The newest intact checkpoint's state, or None when there is none (start from step 0).

    Damaged files are moved aside as ``<name>.damaged`` (by the main process) so that the next
    save cannot rotate them into ``prev.pt``; the message names the damaged file and the one used.
    A manifest that is unreadable, or that disagrees with every checkpoint (it is the manifest that is wrong,
    then, not all of them), is not trusted: each checkpoint is checked by loading it, as one from before checksums.
    """
    import torch
    folder = Path(folder)
    if is_main:
        (folder / TMP).unlink(missing_ok=True)      # half a save, or one not yet moved into place
    manifest = read_manifest(folder)
    present = [folder / n for n in NAMES if (folder / n).exists()]
    digests = {p.name: sha256_file(p) for p in present if manifest is not None and p.stat().st_size}
    if manifest is None and (folder / MANIFEST).exists():
        log(f"[dwt] {folder / MANIFEST} is damaged; checking each checkpoint by loading it")
    elif manifest is not None and digests and not set(digests.values()) & {e["sha256"] for e in manifest.values()}:
        log(f"[dwt] {folder / MANIFEST} matches none of the checkpoints ({', '.join(digests)}); not trusting it, "
            f"checking each checkpoint by loading it")
        manifest = None
    known = {e["sha256"] for e in manifest.values()} if manifest else None
    damaged: list[tuple[Path, str]] = []
    for path in present:
        name = path.name
        why = _why_damaged(path, (manifest or {}).get(name), known, digests.get(name))
        if why is None:
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
                if not isinstance(state, dict) or "step" not in state:
                    why = "not a training checkpoint"
            except Exception as e:          # unpickling errors have many types; the file is unusable
                why = f"unreadable: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if why is None:
            if damaged:
                log(f"[dwt] {_list(damaged)}; resuming from {path} (step {state['step']})")
            if known is None and is_main and (folder / MANIFEST).exists():   # a new manifest: the file that loaded
                digest = digests.get(name) or sha256_file(path)
                atomic_write_json(folder / MANIFEST, {"version": 1, "files": {name: {
                    "sha256": digest, "bytes": path.stat().st_size, "step": state["step"]}}})
            return state
        damaged.append((path, why))
        if is_main:
            move_aside(path)
    if damaged:
        log(f"[dwt] {_list(damaged)}; no intact checkpoint left, so the run starts again from step 0 "
            f"(the damaged files are kept as *.damaged)")
    return None


def _list(damaged: list[tuple[Path, str]]) -> str:
    return "; ".join(f"checkpoint {p} is damaged ({why}), moved aside as {p.name}.damaged" for p, why in damaged)


def step_of(folder: Path) -> Optional[int]:
    """Step of the newest checkpoint named in the manifest (for messages; nothing is verified)."""
    m = read_manifest(folder) or {}
    return (m.get("last.pt") or {}).get("step")


# ----------------------------------------------------------------------------- resuming a run

def rng_state() -> dict:
    """Every generator a training step draws from (torch, Python, NumPy, CUDA), for a checkpoint."""
    import torch      # here, not at the top: the run registry reads manifests without loading torch
    st = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    """Restore what :func:`rng_state` saved."""
    import torch      # here, not at the top: the run registry reads manifests without loading torch
    torch.set_rng_state(st["torch"])
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again).

    ``step`` 0 (no checkpoint yet) empties the log. A line cut short by a kill is dropped too.
    """
    if path.exists():
        keep = []
        for ln in path.read_text().splitlines():
            try:
                rec = json.loads(ln)
            except json.JSONDecodeError:        # half a line written when the process was killed
                continue
            if rec.get("step", 0) <= step:
                keep.append(ln)
        path.write_text("".join(ln + "\n" for ln in keep))
