"""Pre-training data: tokenizer, packing into BERT blocks, cache, MLM masking.

``prepare_pretraining_data(cfg)`` turns ``cfg.data`` into two arrays of blocks ``[CLS] s1 s2 ... [SEP] [PAD]...``
cached once under ``<outputs>/.cache/data-<hash>/`` (``$DWT_CACHE_DIR`` overrides the root) and opened
memory-mapped (:mod:`dwt_lib.datacache`). Where each source is read from (sample, mirror or Hub) is
:mod:`dwt_lib.sources`. Text rules (cleaning, sentence split, 1-in-N sampling, split by
document) are in :mod:`dwt_lib.corpus`; the parallel, bounded-memory build is :mod:`dwt_lib.pipeline`. ``mask_tokens`` is BERT's 80/10/10 masking,
fully determined by an explicit ``torch.Generator`` so a resumed run masks exactly as before.
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

from dwt_lib.data import corpus, cache as datacache
from dwt_lib.data.bytetok import BYTE_VOCAB_SIZE, byte_tokenizer
from dwt_lib.config.schema import BYTE_TOKENIZER, Config, DataConfig
from dwt_lib.core.hashing import stable_hash
from dwt_lib.data.cache import TokenBlocks, cache_root  # noqa: F401  (cache_root: re-exported)
# Source resolution (sample / mirror / Hub) is sources.py; these names stay importable from here.
from dwt_lib.core.errors import DataSourceError  # noqa: F401
from dwt_lib.data.sources import (data_dir, describe_sources, needs_source, require, require_source, resolve, resolve_corpus, sources_table, text_identity)

# Bump when a change here or in corpus.py changes the processed data: it is part of the cache hash.
DATA_CODE_VERSION = 3      # 3: deterministic tokenizer training (see train_tokenizer)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_TAIL_TOKENS = 8   # a document's last block with fewer content tokens is dropped (~1 MLM target)


# ----------------------------------------------------------------------------- tokenizer

def load_tokenizer(name_or_path: str):
    """A fast tokenizer from a Hub id (through the mirror), ``sample:<path>`` or a saved folder; ``"bytes"``: the
    byte-level tokenizer (:mod:`dwt_lib.bytetok`)."""
    if name_or_path == BYTE_TOKENIZER:
        return byte_tokenizer()
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(resolve(name_or_path), use_fast=True)


def vocab_size(dc: DataConfig) -> int:
    """The vocabulary the data gives the models: 261 for bytes, else ``data.vocab_size`` (a trained WordPiece's
    size, or what the profile states for a Hub tokenizer)."""
    return BYTE_VOCAB_SIZE if dc.tokenizer == BYTE_TOKENIZER else dc.vocab_size


def train_tokenizer(sentences: Iterable[str], vocab_size: int):
    """A BERT-style uncased WordPiece (special tokens [PAD] [UNK] [CLS] [SEP] [MASK]) trained on ``sentences``,
    the same for the same sentences on every run.

    ``tokenizers``' own ``WordPieceTrainer`` is not deterministic: it numbers the ``##`` continuation pieces
    in hash-map order, and ties between merges are broken by those numbers, so training twice on the same
    sentences gives different ids and, now and then, different tokens. Here the same BPE training runs on
    words whose non-initial characters are mapped to private-use twins (``h e l l o`` -> ``h ė ł ł ö``): the
    twins stand for ``##e``..., are numbered in sorted order like every other character, and the learned
    vocabulary is mapped back, which is exactly what ``WordPieceTrainer`` computes, minus the randomness.
    Words are counted once (BERT normalizer + pre-tokenizer), so ``sentences`` may be a generator.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    norm = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    batch: list[str] = []
    for s in itertools.chain(sentences, [None]):
        if s is not None:
            batch.append(s)
        if batch and (s is None or len(batch) == 4096):    # character-wise steps: a joined batch is the same
            counts.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(" ".join(batch))))
            batch = []
    chars = sorted(set().union(*counts)) if counts else []
    base = 0xF0000                                        # plane-15 private use: one twin per character
    if chars and ord(chars[-1]) >= base:
        raise ValueError("tokenizer training text contains private-use characters U+F0000 and above")
    twin = {ord(c): base + i for i, c in enumerate(chars)}
    back = {v: k for k, v in twin.items()}

    def twinned():
        for w, n in sorted(counts.items()):
            t = w[0] + w[1:].translate(twin)
            for i in range(0, n, 1024):
                yield " ".join([t] * min(1024, n - i))

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    bpe.train_from_iterator(twinned(), trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2, show_progress=False,
        initial_alphabet=chars))
    vocab = {}
    for piece, i in sorted(bpe.get_vocab().items(), key=lambda kv: kv[1]):
        if piece not in SPECIAL_TOKENS:
            piece = ("##" if ord(piece[0]) >= base else "") + piece.translate(back)
        vocab[piece] = i
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                     max_input_chars_per_word=100))
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece(prefix="##")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=512)


# ----------------------------------------------------------------------------- tokenize + pack

def tokenize_documents(doc_sents: Sequence[Sequence[str]], tokenizer) -> list[list[list[int]]]:
    """Token ids (no special tokens) of every sentence, per document.

    One ``encode_batch_fast`` call over all sentences: multi-threaded in Rust (all cores unless
    ``RAYON_NUM_THREADS`` says otherwise), no offsets computed.
    """
    flat = [s for d in doc_sents for s in d]
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    enc = getattr(backend, "encode_batch_fast", backend.encode_batch)(flat, add_special_tokens=False)
    ids = [e.ids for e in enc]
    out, i = [], 0
    for d in doc_sents:
        out.append(ids[i:i + len(d)])
        i += len(d)
    return out


def pack_blocks(doc_ids: Sequence[Sequence[Sequence[int]]], max_seq_length: int,
                cls_id: int, sep_id: int, pad_id: int, dtype=np.int32,
                min_tail: int = MIN_TAIL_TOKENS) -> np.ndarray:
    """Pack tokenized documents into ``[n_blocks, max_seq_length]`` blocks ``[CLS] ... [SEP] [PAD]*``.

    Within one document the sentences are concatenated (each truncated to ``max_seq_length - 2``
    tokens) and cut into pieces of ``max_seq_length - 2``; a block never mixes documents. Only a
    document's last block is padded, and it is dropped when it has fewer than ``MIN_TAIL_TOKENS``
    content tokens (unless it is the document's only block).
    """
    L = max_seq_length
    C = L - 2
    blocks: list[np.ndarray] = []
    for sents in doc_ids:
        if not sents:
            continue
        flat = np.fromiter((t for s in sents for t in s[:C]), dtype=np.int64)
        n = len(flat)
        if n == 0:
            continue
        nb = -(-n // C)
        if nb > 1 and n - (nb - 1) * C < min_tail:
            nb -= 1
            flat = flat[:nb * C]
            n = len(flat)
        b = np.full((nb, L), pad_id, dtype=np.int64)
        b[:, 0] = cls_id
        body = np.full(nb * C, -1, dtype=np.int64)
        body[:n] = flat
        body = body.reshape(nb, C)
        b[:, 1:L - 1] = np.where(body < 0, pad_id, body)
        lens = np.minimum(C, n - np.arange(nb) * C)          # content tokens per block
        b[np.arange(nb), lens + 1] = sep_id
        blocks.append(b)
    if not blocks:
        return np.zeros((0, L), dtype=dtype)
    return np.concatenate(blocks).astype(dtype)


# ----------------------------------------------------------------------------- cache

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


def data_hash(dc: DataConfig) -> str:
    """Hash of everything that determines the processed data (``num_proc`` excluded: it changes speed only),
    including which dataset each corpus resolves to (the Hub id, a mirror stand-in, or the sample)."""
    d = {k: v for k, v in dc.__dict__.items() if k != "num_proc"}
    if d["tokenizer"] != "train":
        d.pop("vocab_size")          # a loaded tokenizer brings its own vocabulary
    d["corpora"] = [{k: v for k, v in dataclasses.asdict(c).items() if not (k == "rows_per_document" and v is None)}
                    for c in dc.corpora]     # unset: the hash of data cached before the key existed
    d["read"] = [text_identity(c) for c in dc.corpora]   # a stand-in or the sample gives other text
    d["code_version"] = DATA_CODE_VERSION
    d["min_tail_tokens"] = MIN_TAIL_TOKENS
    return stable_hash(d, 12)


def cache_path(dc: DataConfig) -> Path:
    """``<cache root>/data-<hash>``: where :func:`prepare_pretraining_data` keeps ``dc``'s data."""
    return cache_root() / f"data-{data_hash(dc)}"


def build(dc: DataConfig, out: Path, num_proc: Optional[int] = None, streaming: bool = False) -> dict:
    """Run the whole pipeline (:func:`dwt_lib.pipeline.build`) for ``dc`` and write ``train.npy``,
    ``validation.npy``, ``tokenizer/`` and ``stats.json`` into ``out`` (an empty folder). Returns the stats."""
    from dwt_lib.data import pipeline
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
    cache. A damaged entry is moved aside and rebuilt (see :mod:`dwt_lib.datacache`).
    """
    from filelock import FileLock
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


# ----------------------------------------------------------------------------- MLM masking

def attention_mask(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """1 where ``input_ids`` is not padding, else 0 (same shape, long)."""
    return (input_ids != pad_id).long()


def mask_tokens(input_ids: torch.Tensor, tokenizer, mlm_probability: float = 0.15,
                generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: returns ``(masked_input_ids, labels)``.

    Each non-special, non-pad token is selected with probability ``mlm_probability``; a selected
    token becomes [MASK] (80%), a random non-special token (10%) or stays (10%). ``labels`` holds
    the original id at selected positions and -100 elsewhere. Every random draw comes from
    ``generator`` (three draws of fixed shape), so the same generator state gives the same masks.
    Written here rather than with ``DataCollatorForLanguageModeling`` because the collator owns its
    generator (a ``seed`` at construction, not one per call) and draws random replacements from
    the whole vocabulary, special tokens included.
    """
    device = input_ids.device        # draws happen on the (CPU) generator's device, results move back
    input_ids = input_ids.cpu()
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=input_ids.dtype)
    can_mask = ~torch.isin(input_ids, special)
    u = torch.rand(input_ids.shape, generator=generator)
    how = torch.rand(input_ids.shape, generator=generator)
    normal = torch.ones(len(tokenizer), dtype=torch.bool)
    normal[special] = False
    pool = normal.nonzero().squeeze(1)
    rnd = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
    selected = can_mask & (u < mlm_probability)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    out = input_ids.clone()
    out[selected & (how < 0.8)] = tokenizer.mask_token_id
    swap = selected & (how >= 0.8) & (how < 0.9)
    out[swap] = rnd[swap].to(out.dtype)
    return out.to(device), labels.to(device)


# ----------------------------------------------------------------------------- reporting

def stats_table(stats: dict):
    """Documents, sentences, words and tokens before and after 1-in-N sampling, as a DataFrame."""
    import pandas as pd
    rows = {"documents": (stats["documents"], stats["documents"]),
            "sentences": (stats["sentences_before_sampling"], stats["sentences_after_sampling"]),
            "words": (stats["words_before_sampling"], stats["words_after_sampling"]),
            "tokens": (stats["tokens_before_sampling_estimate"], stats["tokens_after_sampling"])}
    t = pd.DataFrame(rows, index=["before sampling", "after sampling"]).T
    t["kept"] = (t["after sampling"] / t["before sampling"]).round(3)
    return t


def length_histograms(stats: dict):
    """Figure: sentence length (tokens) and block length (non-pad tokens) histograms from ``stats``."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key, title in zip(axes, ("sentence_length_tokens_hist", "block_length_tokens_hist"),
                              ("sampled sentences", f"blocks (max_seq_length {stats['max_seq_length']})")):
        h = stats[key]
        if h["counts"]:
            ax.stairs(h["counts"], h["edges"], fill=True)
        ax.set(xlabel="tokens", ylabel="count", title=title, yscale="log")
    fig.tight_layout()
    return fig
