"""Pre-training data: the processed data of a profile, built once and cached under the hash of its config.

``prepare_pretraining_data(cfg)`` turns ``cfg.data`` into two arrays of blocks ``[CLS] s1 s2 ... [SEP] [PAD]...``
cached once under ``<outputs>/.cache/data-<hash>/`` (``$DWT_CACHE_DIR`` overrides the root) and opened
memory-mapped (:mod:`dwt_lib.data.cache`). Where each source is read from (sample, mirror or Hub) is
:mod:`dwt_lib.data.sources`. Text rules (cleaning, sentence split, 1-in-N sampling, split by
document) are in :mod:`dwt_lib.data.corpus`; the parallel, bounded-memory build is :mod:`dwt_lib.data.pipeline`. Tokenizers and packing are :mod:`dwt_lib.data.tokens`,
BERT's masking :mod:`dwt_lib.data.masking`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from dwt_lib.data import cache as datacache
from dwt_lib.data import pipeline, tokens
from dwt_lib.config.schema import BYTE_TOKENIZER, Config, DataConfig
from dwt_lib.core import readonly
from dwt_lib.core.errors import ReadOnlyError
from dwt_lib.core.hashing import stable_hash
from dwt_lib.core.paths import cache_root
from dwt_lib.data.cache import TokenBlocks
# Source resolution (sample / mirror / Hub) is sources.py; these names stay importable from here.
from dwt_lib.core.errors import DataSourceError  # noqa: F401
from dwt_lib.data.sources import (describe_sources, needs_source, pinned_reads, require, require_source, resolve, resolve_corpus, sources_table, text_identity)

@dataclass
class PretrainingData:
    """Packed pre-training blocks: ``train`` [N, L] and ``validation`` [M, L] token ids, memory-mapped
    read-only (indexing returns LongTensors of the rows asked for)."""
    train: TokenBlocks
    validation: TokenBlocks
    tokenizer: object            # PreTrainedTokenizerFast
    stats: dict
    cache_dir: Path
    hash: str


def data_hash(dc: DataConfig, reads: Optional[Sequence[str]] = None) -> str:
    """Hash of everything that determines the processed data (``num_proc`` excluded: it changes speed only),
    including which dataset each corpus resolves to (the Hub id, a mirror stand-in, or the sample): as resolved on
    this machine, or ``reads`` (one :func:`text_identity` per corpus, e.g. as recorded at export)."""
    d = {k: v for k, v in dc.__dict__.items() if k != "num_proc"}
    if d["tokenizer"] != "train":
        d.pop("vocab_size")          # a loaded tokenizer brings its own vocabulary
    d["corpora"] = [{k: v for k, v in dataclasses.asdict(c).items() if not (k == "rows_per_document" and v is None)}
                    for c in dc.corpora]     # unset: the hash of data cached before the key existed
    d["read"] = list(reads) if reads is not None else [text_identity(c) for c in dc.corpora]   # a stand-in or the sample gives other text
    d["code_version"] = tokens.DATA_CODE_VERSION       # read through the module: a test bumps it
    d["min_tail_tokens"] = tokens.MIN_TAIL_TOKENS
    return stable_hash(d, 12)


def cache_path(dc: DataConfig) -> Path:
    """``<cache root>/data-<hash>``: where :func:`prepare_pretraining_data` keeps ``dc``'s data."""
    return cache_root() / f"data-{data_hash(dc)}"


def run_data_hash(cfg: Config) -> str:
    """The data hash a run of ``cfg`` is identified by: :func:`data_hash`, in read-only mode with each corpus read as
    recorded at export (:func:`~dwt_lib.data.sources.pinned_reads`), not as this machine (no mirror) resolves it."""
    return data_hash(cfg.data, pinned_reads(cfg))


def data_dir(cfg: Config) -> Path:
    """Where ``cfg``'s processed data is: the cache (:func:`cache_path`), or in read-only mode the exported copy."""
    if readonly.enabled():
        return readonly.export_dir(cfg.profile) / f"data-{run_data_hash(cfg)}"
    return cache_path(cfg.data)


def exported_data(cfg: Config) -> PretrainingData:
    """Read-only mode: the processed data copied into the exported registry (checked against its manifest, the
    cache's own); a clear error when the export has none for this data config."""
    path = data_dir(cfg)
    if not path.is_dir():
        raise ReadOnlyError(f"read-only mode: the exported registry has no processed data for profile "
                            f"{cfg.profile}'s data settings", path, readonly.fix(cfg.profile))
    why = datacache.verify(path)
    if why:
        raise ReadOnlyError(f"read-only mode: the exported processed data is damaged ({why})", path,
                            f"restore it from git (git checkout -- {path}), or {readonly.fix(cfg.profile)}")
    return load_cached(path)


def build(dc: DataConfig, out: Path, num_proc: Optional[int] = None, streaming: bool = False) -> dict:
    """Run the whole pipeline (:func:`dwt_lib.data.pipeline.build`) for ``dc`` and write ``train.npy``,
    ``validation.npy``, ``tokenizer/`` and ``stats.json`` into ``out`` (an empty folder). Returns the stats."""
    srcs = [require(resolve_corpus(c), "pre-training corpus") for c in dc.corpora]
    if needs_source(dc):
        require_source(dc.tokenizer, "tokenizer", repo_type="model")
    # A stand-in is another dataset: read it with its own (default) config, not the Hub dataset's, and row by
    # row (whole books per row: rows_per_document describes the Hub dataset's rows only).
    read = dataclasses.replace(dc, corpora=tuple(dataclasses.replace(c, config=None, rows_per_document=None)
                                                 if s.stand_in else c
                                                 for c, s in zip(dc.corpora, srcs)))
    try:
        stats = pipeline.build(read, out, [s.where for s in srcs], num_proc=num_proc, streaming=streaming)
    except pipeline.CorpusError as e:
        raise DataSourceError(str(e)) from None
    stats["config"] = dataclasses.asdict(dc)
    stats["sources"] = [s.record() for s in srcs]     # what was read: sample / mirror (stand-in?) / hub
    with open(out / "stats.json", "w") as f:
        f.write(json.dumps(stats, indent=1))
    return stats


def blocks_sha256(blocks: TokenBlocks) -> str:
    """sha256 of a block array's shape, storage dtype and bytes: the identity of packed data."""
    a = np.ascontiguousarray(blocks.array)
    return hashlib.sha256(f"{a.shape}{a.dtype}".encode() + a.tobytes()).hexdigest()


def load_cached(path: Path) -> PretrainingData:
    """Open a finished cache folder written by :func:`build` (blocks memory-mapped, not read)."""
    from transformers import PreTrainedTokenizerFast
    stats = json.loads((path / "stats.json").read_text())
    tok = PreTrainedTokenizerFast.from_pretrained(str(path / "tokenizer"))
    return PretrainingData(TokenBlocks(path / "train.npy"), TokenBlocks(path / "validation.npy"), tok, stats,
                           path, path.name.removeprefix("data-"))


def prepare_pretraining_data(cfg: Config, num_proc: Optional[int] = None,
                             streaming: Optional[bool] = None) -> PretrainingData:
    """Processed pre-training data for ``cfg.data``: from the cache when present and intact, else built once.

    ``num_proc`` (default ``data.num_proc``, then all cores) changes the speed only. ``streaming`` (default:
    ``$DWT_DATA_STREAMING`` = 1) streams Hub corpora into the build folder instead of the 🤗 datasets cache.

    A file lock makes concurrent callers wait for one build; the build goes to a temporary folder that is
    renamed into place once its manifest (checksums) is written, so a reader never sees a half-written
    cache. A damaged entry is moved aside and rebuilt (see :mod:`dwt_lib.data.cache`). In read-only mode the
    exported copy is read and nothing is built (:func:`exported_data`).
    """
    from filelock import FileLock
    if readonly.enabled():
        return exported_data(cfg)
    dc = cfg.data
    path = cache_path(dc)
    if path.parent.is_dir():
        datacache.remove_stale_builds(path.parent)
    if path.is_dir() and datacache.verify(path) is None:
        return load_cached(path)
    for c in dc.corpora:               # fail before any work (and before taking the lock)
        require(resolve_corpus(c), "pre-training corpus")
    if needs_source(dc):
        require_source(dc.tokenizer, "tokenizer", repo_type="model")
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        datacache.remove_stale_builds(path.parent)
        if path.exists():
            why = datacache.verify(path)
            if why is None:            # another process built it while we waited
                return load_cached(path)
            datacache.move_aside(path, why)
        tmp = path.parent / f"{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            if streaming is None:
                streaming = os.environ.get("DWT_DATA_STREAMING", "").lower() in ("1", "true", "yes", "on")
            build(dc, tmp, num_proc=num_proc, streaming=streaming)
            datacache.write_manifest(tmp)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return load_cached(path)


