"""The processed-data cache: checksums verified on load, damaged entries moved aside and rebuilt, stale build
folders removed, a killed build leaves nothing half-written, blocks memory-mapped, the cache root follows
``DWT_OUTPUTS_DIR``.

Each rebuild is a real (tiny) build, so "healed" means the same blocks as the undamaged entry.
"""
from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dwt_lib.core import paths
from dwt_lib.data import prepare as data, cache as datacache
from dwt_lib.config.load import load_params

# The first 12 articles of the Wikipedia sample shipped with the package: no mirror needed.
TINY = {"data.corpora": [{"id": "sample:corpora/wikipedia-en"}], "data.max_documents": 12, "data.max_sentences": None,
        "data.vocab_size": 300, "data.max_seq_length": 32, "data.validation_fraction": 0.3}
REPO = Path(__file__).resolve().parent.parent


def _cfg():
    return load_params("smoke", TINY)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWT_CACHE_DIR", str(root))
        return data.prepare_pretraining_data(_cfg())


def _same(a, b):
    assert a.hash == b.hash
    assert torch.equal(a.train[:], b.train[:]) and torch.equal(a.validation[:], b.validation[:])
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    drop = lambda s: {k: v for k, v in s.items() if k not in ("seconds", "num_proc")}
    assert drop(a.stats) == drop(b.stats)


# ----------------------------------------------------------------------------- where the cache lives

def test_cache_follows_outputs_dir_unless_cache_dir_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("DWT_CACHE_DIR", raising=False)
    monkeypatch.delenv("DWT_OUTPUTS_DIR", raising=False)
    assert paths.cache_root() == REPO / "outputs" / ".cache"
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path / "out"))
    assert paths.cache_root() == tmp_path / "out" / ".cache"
    assert data.cache_path(_cfg().data).parent == tmp_path / "out" / ".cache"
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path / "cache"))
    assert data.cache_path(_cfg().data).parent == tmp_path / "cache"


# ----------------------------------------------------------------------------- storage

def test_entry_has_a_manifest_and_blocks_are_memory_mapped_read_only(good):
    assert len(good.train) > 10 and len(good.validation) > 0
    d = good.cache_dir
    assert datacache.verify(d) is None
    man = (d / datacache.MANIFEST).read_text()
    for f in ("train.npy", "validation.npy", "stats.json", "tokenizer/tokenizer.json"):
        assert f'"{f}"' in man
    arr = good.train.array
    assert isinstance(arr, np.memmap) and arr.dtype == np.uint16 and not arr.flags.writeable
    if Path("/proc/self/maps").exists():               # a file mapping (shared page cache), not a private copy
        assert str((d / "train.npy").resolve()) in Path("/proc/self/maps").read_text()
    with pytest.raises(ValueError):
        arr[0, 0] = 1
    idx = torch.tensor([3, 0, 2])
    assert torch.equal(good.train[idx], torch.from_numpy(np.asarray(arr)[[3, 0, 2]].astype(np.int64)))
    blob = pickle.dumps(good.train)                    # a path, not the blocks
    assert len(blob) < 1000 and torch.equal(pickle.loads(blob)[:], good.train[:])
    # what training records per process (tests/test_pretrain.py checks it on 2 processes)
    want = {"memmap": True, "read_only": True, "file": f"{d.name}/train.npy", "inode": (d / "train.npy").stat().st_ino}
    assert good.train.access() == pickle.loads(blob).access() == want
    copy = datacache.TokenBlocks(np.array(arr)).access()
    assert not copy["memmap"] and copy["file"] is None


# ----------------------------------------------------------------------------- damage heals

def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path):                                    # same size, different bytes: only the checksum sees it
    b = bytearray(p.read_bytes())
    for i in range(len(b) - 1000, len(b) - 10, 97):
        b[i] ^= 0x5A
    p.write_bytes(bytes(b))


DAMAGE = {
    "train.npy deleted": ("train.npy", lambda p: p.unlink(), "train.npy is missing"),
    "train.npy truncated": ("train.npy", _truncate, "train.npy has"),
    "random bytes inside train.npy": ("train.npy", _flip, "train.npy does not match"),
    "stats.json deleted": ("stats.json", lambda p: p.unlink(), "stats.json is missing"),
    "stats.json truncated": ("stats.json", _truncate, "stats.json has"),
    "tokenizer damaged": ("tokenizer/tokenizer.json", _flip, "tokenizer/tokenizer.json does not match"),
    "manifest deleted": (datacache.MANIFEST, lambda p: p.unlink(), "no manifest.json"),
    "manifest damaged": (datacache.MANIFEST, _truncate, "manifest.json is unreadable"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_entry_is_moved_aside_and_rebuilt(good, case, tmp_path, monkeypatch):
    rel, damage, reason = DAMAGE[case]
    entry = tmp_path / good.cache_dir.name
    shutil.copytree(good.cache_dir, entry)
    damage(entry / rel)
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))
    with pytest.warns(datacache.CacheRepairWarning, match=reason) as w:
        again = data.prepare_pretraining_data(_cfg())
    assert "moved aside" in str(w[0].message) and str(entry) in str(w[0].message)
    _same(again, good)
    aside = list(tmp_path.glob(f"{entry.name}.damaged-*"))
    assert len(aside) == 1 and (aside[0] / "train.npy").exists() | (rel == "train.npy")   # kept, not deleted
    assert datacache.verify(entry) is None and not list(tmp_path.glob("*.tmp-*"))


def test_intact_entry_is_a_hit_without_warning(good, monkeypatch, recwarn):
    monkeypatch.setenv("DWT_CACHE_DIR", str(good.cache_dir.parent))
    monkeypatch.setattr(data, "build", lambda *a, **k: pytest.fail("rebuilt an intact entry"))
    _same(data.prepare_pretraining_data(_cfg()), good)
    assert not [w for w in recwarn if issubclass(w.category, datacache.CacheRepairWarning)]


# ----------------------------------------------------------------------------- interrupted builds

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_build_folders_of_dead_processes_are_removed(good, tmp_path, monkeypatch):
    h = good.cache_dir.name
    dead = tmp_path / f"{h}.tmp-{_dead_pid()}"
    other = tmp_path / f"data-0123456789ab.tmp-{_dead_pid()}"
    live = tmp_path / f"{h}.tmp-{os.getppid()}"             # a running process: maybe still building
    for d in (dead, other, live):
        (d / "tokenizer").mkdir(parents=True)
        (d / "train.npy").write_bytes(b"partial")
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))
    _same(data.prepare_pretraining_data(_cfg()), good)
    assert not dead.exists() and not other.exists() and live.exists()


def test_sigkill_mid_build_then_rerun_gives_the_same_data(good, tmp_path):
    """A build killed while it writes leaves only its tmp folder; the rerun removes it and builds the same."""
    # The build stops for good once its files are written and before its manifest: the kill lands mid-build
    # however loaded the machine is (no race between the poll below and the build finishing).
    script = textwrap.dedent(f"""
        import time
        from dwt_lib.data import prepare as data, cache as datacache
        from dwt_lib.config import load_params
        def stop(folder):
            (folder.parent / "paused").touch()
            time.sleep(3600)
        datacache.write_manifest = stop
        data.prepare_pretraining_data(load_params("smoke", {TINY!r}))
    """)
    env = dict(os.environ, DWT_CACHE_DIR=str(tmp_path), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and not (tmp_path / "paused").exists():
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before it reached its manifest"
    assert list(tmp_path.glob("*.tmp-*/train.npy")), "paused before the blocks were written"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("*.tmp-*")) and not (tmp_path / good.cache_dir.name).exists()
    os.environ["DWT_CACHE_DIR"], old = str(tmp_path), os.environ.get("DWT_CACHE_DIR")
    try:
        again = data.prepare_pretraining_data(_cfg())
    finally:
        os.environ.pop("DWT_CACHE_DIR") if old is None else os.environ.__setitem__("DWT_CACHE_DIR", old)
    _same(again, good)
    assert not list(tmp_path.glob("*.tmp-*"))
