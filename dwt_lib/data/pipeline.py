"""Build the processed pre-training data on 🤗 ``datasets``: batched passes on ``num_proc`` workers, shards on
disk, memory bounded by the batch, not the corpus (HF ``run_mlm.py`` / Megatron ``preprocess_data.py``).

1. **Read.** Each corpus is ``datasets.load_dataset(folder or Hub id, config, split=split)``: the mirror's
   Parquet folders (their README ``configs:`` block) and Hub repos go through the same call, as memory-mapped
   Arrow. ``streaming=True`` streams a Hub corpus into Arrow shards in the build folder instead.
2. **Text pass** (``map``, batched, ``num_proc``): clean, split sentences, count words; the document's
   validation draw ``sha256(seed:key)``. Workers take contiguous shards and datasets concatenates them in
   order, so the output does not depend on ``num_proc`` (no leftovers carried between batches).
3. **Sampling plan** (:mod:`dwt_lib.data.sampling`; main process, arrays of one number per document, as Megatron
   keeps document lengths): documents in the global order (corpora interleaved round-robin), an exclusive prefix sum of sentence
   counts gives each document's first global sentence index, hence which of its sentences are 1 in N and how
   many survive ``max_sentences``. Validation documents by hash.
4. **Tokenizer**: loaded, or trained on at most ``TOKENIZER_SAMPLE_SENTENCES`` training sentences taken
   evenly (in global order) from the sampled ones.
5. **Tokenize + pack pass** (``map``, ``num_proc``): each document's sampled sentences are tokenized and packed
   into its own blocks (a block never mixes documents, so this is per document and order-free).
6. **Gather** (main process, streaming windows in global order): blocks appended to ``train.npy`` /
   ``validation.npy`` (``numpy.lib.format.open_memmap``), statistics accumulated as histograms of counts.

The result equals :func:`dwt_lib.data.build_in_memory` (the reference written with Python lists) block for
block; ``tests/test_data.py`` checks it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from dwt_lib.data import corpus, tokens
from dwt_lib.config.schema import BYTE_TOKENIZER
from dwt_lib.data.sampling import interleave_order, sampling_plan, validation_from_draws, windows
from dwt_lib.core.errors import CorpusError

TOKENIZER_SAMPLE_SENTENCES = 2_000_000   # tokenizer training reads at most this many training sentences
BATCH_BYTES = 8 << 20                    # text per map batch (a few books, or ~5k Wikipedia articles)
WINDOW_ITEMS = 1 << 16                   # block rows held by the main process per gather window (16 MiB at L=128)


def _nproc(num_proc: Optional[int]) -> int:
    return max(1, num_proc or os.cpu_count() or 1)


# ----------------------------------------------------------------------------- 1. read

def open_corpus(c, source: str, max_documents: Optional[int], work: Path, streaming: bool = False):
    """Corpus ``c`` (a :class:`~dwt_lib.config.CorpusSource`) read from ``source`` (a folder or Hub id) as a
    ``datasets.Dataset`` with one column ``text``: its first ``max_documents`` documents (all when None). With
    ``c.rows_per_document`` = N, N consecutive rows make one document (:func:`group_rows`)."""
    import datasets
    name = f"corpus {c.id!r}" + (f" (config {c.config!r})" if c.config else "") + f", split {c.split!r}"
    try:
        ds = datasets.load_dataset(source, c.config, split=c.split, streaming=streaming)
    except Exception as e:           # no data files, an empty file, an unknown config or split, no network
        why = (str(e).strip().splitlines() or [""])[0][:300]
        raise CorpusError(f"{name} could not be read from {source}: it has no rows or is unreadable "
                          f"({type(e).__name__}{': ' + why if why else ''}); check the source, its config "
                          f"and split") from e
    cols = list(ds.column_names or ds.features or [])
    if c.text_column not in cols:
        raise CorpusError(f"{name} has no column {c.text_column!r} (columns: {', '.join(map(str, cols)) or 'none'}); "
                          f"set text_column for this corpus in data.corpora")
    k = getattr(c, "rows_per_document", None)
    if max_documents is not None and k:
        max_documents *= k                            # rows to read
    if streaming:
        from datasets.arrow_writer import ArrowWriter
        it = ds.select_columns([c.text_column])
        if max_documents is not None:
            it = it.take(max_documents)
        path = work / f"stream-{hashlib.sha256(name.encode()).hexdigest()[:8]}.arrow"
        w = ArrowWriter(path=str(path), features=datasets.Features({"text": datasets.Value("string")}))
        buf: list = []
        for row in it:
            buf.append(row[c.text_column])
            if len(buf) == 1000:
                w.write_batch({"text": buf})
                buf = []
        if buf:
            w.write_batch({"text": buf})
        w.finalize()
        ds = datasets.Dataset.from_file(str(path))
    else:
        if max_documents is not None and max_documents < len(ds):
            ds = ds.select(range(max_documents))
        ds = ds.select_columns([c.text_column])
        if c.text_column != "text":
            ds = ds.rename_column(c.text_column, "text")
    if getattr(c, "rows_per_document", None):
        ds = group_rows(ds, c.rows_per_document, work / f"grouped-{hashlib.sha256(name.encode()).hexdigest()[:8]}.arrow")
    if len(ds) == 0:
        raise CorpusError(f"{name} is empty: no documents to prepare; check the source ({source}) and its split")
    return ds


def group_rows(ds, k: int, path: Path, window: int = 1 << 16):
    """Rows of ``ds`` (column ``text``) joined ``k`` at a time into documents, as
    :func:`dwt_lib.data.corpus.group_texts`: row ``r`` goes to document ``r // k`` (global row index, in the main
    process, so the grouping never depends on ``num_proc``). Streams windows of ``k * window`` rows (about
    ``window`` documents) from the memory-mapped Arrow table into ``path``."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc
    from datasets.arrow_writer import ArrowWriter

    w = ArrowWriter(path=str(path), features=datasets.Features({"text": datasets.Value("string")}))
    step = k * window
    for r0 in range(0, len(ds), step):
        col = ds.data.slice(r0, step).column("text").combine_chunks().cast(pa.large_string())
        rows = pc.binary_join_element_wise(pc.fill_null(col, ""), pa.scalar(corpus.ROW_SEPARATOR, pa.large_string()),
                                           pa.scalar("", pa.large_string()))
        offs = np.append(np.arange(0, len(rows), k), len(rows)).astype(np.int64)
        docs = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offs), rows), pa.scalar("", pa.large_string()))
        w.write_table(pa.table({"text": docs.cast(pa.string())}))
    w.finalize()
    return datasets.Dataset.from_file(str(path))


def _batch_size(ds) -> int:
    """Rows per map batch: about ``BATCH_BYTES`` of text (1 to 1000 rows)."""
    avg = max(1, ds.data.nbytes // max(1, len(ds)))
    return int(min(1000, max(1, BATCH_BYTES // avg)))


# ----------------------------------------------------------------------------- 2. text pass

def _text_batch(batch, idx: list, cid: str, seed: int, rows: int = 1):
    import pyarrow as pa
    sents = [corpus.split_sentences(corpus.clean_document(t or "")) for t in batch.column("text").to_pylist()]
    keys = [f"{cid}#{i * rows}" for i in idx]       # a document's first row
    return pa.table({"sentences": pa.array(sents, pa.list_(pa.string())),
                     "n_sentences": pa.array([len(s) for s in sents], pa.int64()),
                     "n_words": pa.array([sum(len(x.split()) for x in s) for s in sents], pa.int64()),
                     "u": pa.array(corpus.validation_draws(keys, seed), pa.float64())})


def _fp(step: str, out: Path) -> str:
    return hashlib.sha256(f"{step}:{out}".encode()).hexdigest()[:16]


def _map(ds, fn, work: Path, name: str, num_proc: int, fingerprint: str, fn_kwargs: dict, desc: str,
         features=None, batch_size: Optional[int] = None):
    bs = batch_size or _batch_size(ds)
    n = min(num_proc, max(1, -(-len(ds) // bs)))        # no more workers than batches
    return ds.with_format("arrow").map(fn, batched=True, with_indices=True, batch_size=bs, writer_batch_size=bs,
                  num_proc=n if n > 1 else None, remove_columns=ds.column_names, fn_kwargs=fn_kwargs,
                  cache_file_name=str(work / f"{name}.arrow"), new_fingerprint=fingerprint, features=features,
                  load_from_cache_file=False, desc=desc)


# ----------------------------------------------------------------------------- 3. plan: dwt_lib/sampling.py

# ----------------------------------------------------------------------------- 4. tokenizer sample

def _iter_training_sentences(text_ds: list, order: tuple, first: np.ndarray, kept: np.ndarray,
                             is_val: np.ndarray, every: int, limit: int) -> Iterator[str]:
    """Sampled training sentences in global order, evenly thinned to at most ``limit``."""
    cors, rows = order
    train_kept = np.where(is_val, 0, kept)
    total = int(train_kept.sum())
    stride = max(1, -(-total // limit))
    j = 0                                             # global index among sampled training sentences
    for p in np.nonzero(train_kept)[0]:               # global order; one document's kept sentences at a time
        col = text_ds[int(cors[p])].data.slice(int(rows[p]), 1).column("sentences")
        for s in sampled_sentences(col, first[p:p + 1], kept[p:p + 1], every)[0]:
            if j % stride == 0:
                yield s
            j += 1


# ----------------------------------------------------------------------------- 5. tokenize + pack pass

_PLANS: dict = {}


def _plan(path: str) -> np.ndarray:
    """A per-document plan array, memory-mapped once per worker (workers get its path, not the array)."""
    if path not in _PLANS:
        _PLANS[path] = np.load(path, mmap_mode="r")
    return _PLANS[path]


def _pack_batch(batch: dict, idx: list, plan: str, every: int, tok, L: int, dtype: str, min_tail: int,
                space: bool = False) -> dict:
    """``space``: end every sentence with a space before tokenizing (the byte tokenizer: its blocks join sampled
    sentences, and without it their bytes would run into each other, "end.Next"; WordPiece needs none)."""
    import pyarrow as pa

    p = _plan(plan)
    i0, i1 = idx[0], idx[-1] + 1                      # a batch is a contiguous run of rows
    flat, lens = sampled_sentences(batch.column("sentences"), p[0, i0:i1], p[1, i0:i1], every)
    if space:
        flat = [x + " " for x in flat]
    sampled = _split(flat, lens.tolist())
    backend = getattr(tok, "backend_tokenizer", tok)
    enc = getattr(backend, "encode_batch_fast", backend.encode_batch)(flat, add_special_tokens=False) if flat else []
    ids = [e.ids for e in enc]
    del enc                                           # Encoding objects hold much more than the ids
    blocks, n_blocks, block_len = [], [], []
    i = 0
    for d in sampled:
        b = tokens.pack_blocks([ids[i:i + len(d)]], L, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id,
                        dtype=np.dtype(dtype), min_tail=min_tail)
        i += len(d)
        blocks.append(b.reshape(-1))
        n_blocks.append(len(b))
        block_len.append((b != tok.pad_token_id).sum(1).astype(np.int32))
    lst = lambda arrs, t: pa.ListArray.from_arrays(
        pa.array(np.concatenate([[0], np.cumsum([len(a) for a in arrs])]).astype(np.int32)),
        pa.array(np.concatenate(arrs) if arrs else np.zeros(0, t), type=pa.from_numpy_dtype(t)))
    return pa.table({"blocks": lst(blocks, np.dtype(dtype)), "n_blocks": pa.array(n_blocks, pa.int64()),
                     "block_len": lst(block_len, np.dtype(np.int32)),
                     "sent_words": lst([np.array([len(s.split()) for s in d], np.int32) for d in sampled],
                                       np.dtype(np.int32)),
                     "sent_tokens": lst([np.array([len(x) for x in ids_d], np.int32) for ids_d in
                                         _split(ids, [len(d) for d in sampled])], np.dtype(np.int32))})


def sampled_sentences(sentences, first: np.ndarray, kept: np.ndarray, every: int) -> tuple[list, np.ndarray]:
    """The kept sentences of a run of documents (a list<string> Arrow column) as one flat Python list, and
    how many each document keeps: only those strings leave Arrow."""
    import pyarrow as pa
    arr = sentences.combine_chunks() if isinstance(sentences, pa.ChunkedArray) else sentences
    offs = arr.offsets.to_numpy()[:len(arr) + 1]
    kept = np.asarray(kept, dtype=np.int64)
    starts = np.repeat(offs[:-1] + np.asarray(first, dtype=np.int64), kept)
    within = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)
    return arr.values.take(pa.array(starts + every * within)).to_pylist(), kept


def _split(xs: list, lens: list) -> list:
    out, i = [], 0
    for n in lens:
        out.append(xs[i:i + n])
        i += n
    return out


# ----------------------------------------------------------------------------- 6. gather

def _hist(bincounts: np.ndarray, bins: int = 40) -> dict:
    """``np.histogram(values, bins)`` of the values whose counts are ``bincounts`` (identical edges and counts)."""
    vals = np.nonzero(bincounts)[0]
    if len(vals) == 0:
        return {"counts": [], "edges": []}
    counts, edges = np.histogram(vals, bins=bins, weights=bincounts[vals])
    return {"counts": counts.astype(np.int64).tolist(), "edges": edges.tolist()}


def _add_counts(acc: np.ndarray, values: np.ndarray) -> np.ndarray:
    bc = np.bincount(values)
    if len(bc) > len(acc):
        acc = np.concatenate([acc, np.zeros(len(bc) - len(acc), acc.dtype)])
    acc[:len(bc)] += bc
    return acc


def gather(packed: list, order: tuple, is_val: np.ndarray, out: Path, L: int, dtype) -> dict:
    """Write every document's blocks in global order to ``train.npy`` / ``validation.npy``; returns sums and
    bincounts for the statistics. Memory: one window of about ``WINDOW_ITEMS`` blocks."""
    from numpy.lib.format import open_memmap
    cors, rows = order
    nb = np.zeros(len(cors), np.int64)
    for k, ds in enumerate(packed):
        sel = cors == k
        nb[sel] = ds.data.column("n_blocks").to_numpy()[rows[sel]]
    files = {False: open_memmap(out / "train.npy", "w+", dtype, (int(nb[~is_val].sum()), L)),
             True: open_memmap(out / "validation.npy", "w+", dtype, (int(nb[is_val].sum()), L))}
    cursor = {False: 0, True: 0}
    acc = {"sent_words": np.zeros(1, np.int64), "sent_tokens": np.zeros(1, np.int64), "block_len": np.zeros(1, np.int64)}
    for a, b in windows(np.maximum(nb, 1), WINDOW_ITEMS):
        sl = {}
        for k in np.unique(cors[a:b]):
            r = rows[a:b][cors[a:b] == k]
            sl[int(k)] = (int(r[0]), packed[k].data.slice(int(r[0]), int(r[-1] - r[0] + 1)))
        for k, (r0, t) in sl.items():
            for col in acc:
                acc[col] = _add_counts(acc[col], t.column(col).combine_chunks().flatten().to_numpy(zero_copy_only=False))
        vals = {k: t.column("blocks").combine_chunks() for k, (_, t) in sl.items()}
        offs = {k: v.offsets.to_numpy() for k, v in vals.items()}
        flat = {k: v.values.to_numpy(zero_copy_only=False) for k, v in vals.items()}
        for split in (False, True):
            parts = []
            for p in range(a, b):
                if is_val[p] == split and nb[p]:
                    k = int(cors[p])
                    i = int(rows[p]) - sl[k][0]
                    parts.append(flat[k][offs[k][i]:offs[k][i + 1]])
            if parts:
                x = np.concatenate(parts).reshape(-1, L)
                files[split][cursor[split]:cursor[split] + len(x)] = x
                cursor[split] += len(x)
    for m in files.values():
        m.flush()
    del files
    return {"train_blocks": cursor[False], "validation_blocks": cursor[True], **acc}


# ----------------------------------------------------------------------------- the build

def build(dc, out: Path, sources: Sequence[str], num_proc: Optional[int] = None, streaming: bool = False) -> dict:
    """Write ``train.npy``, ``validation.npy``, ``tokenizer/`` and ``stats.json`` for ``dc`` into ``out``
    (an empty folder; intermediate Arrow shards go to ``out/work`` and are removed). Returns the stats."""
    import shutil

    t0 = time.time()
    nproc = _nproc(num_proc or dc.num_proc)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    old_par = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"     # one thread per worker: num_proc is the core count
    try:
        raw = [open_corpus(c, s, dc.max_documents if c.max_documents is None else c.max_documents, work, streaming)
               for c, s in zip(dc.corpora, sources)]         # a corpus's own max_documents first
        text = [_map(ds, _text_batch, work, f"text-{k}", nproc, _fp(f"text-{k}", out),
                     {"cid": c.id, "seed": dc.seed, "rows": c.rows_per_document or 1}, f"clean + split {c.id}") for k, (c, ds) in enumerate(zip(dc.corpora, raw))]
        order = interleave_order([len(d) for d in text])
        cors, rows = order
        col = lambda dss, name: np.concatenate([d.data.column(name).to_numpy() for d in dss])
        base = np.cumsum([0] + [len(d) for d in text])[:-1]
        n_sent = col(text, "n_sentences")[base[cors] + rows]
        n_words = col(text, "n_words")[base[cors] + rows]
        u = col(text, "u")[base[cors] + rows]
        first, kept = sampling_plan(n_sent, dc.sample_every, dc.max_sentences)
        is_val = validation_from_draws(u, dc.validation_fraction)
        t_text = time.time()

        n_tok_sample = None
        if dc.tokenizer == "train":
            n_tok_sample = int(min(np.where(is_val, 0, kept).sum(), TOKENIZER_SAMPLE_SENTENCES))
            tok = tokens.train_tokenizer(_iter_training_sentences(text, order, first, kept, is_val, dc.sample_every,
                                                           TOKENIZER_SAMPLE_SENTENCES), dc.vocab_size)
        else:
            tok = tokens.load_tokenizer(dc.tokenizer)
        t_tok = time.time()

        dtype = np.uint16 if len(tok) <= 65536 else np.int32
        packed = []
        for k, (c, ds) in enumerate(zip(dc.corpora, text)):
            sel = cors == k
            plan = np.zeros((2, len(ds)), np.int64)
            plan[0, rows[sel]], plan[1, rows[sel]] = first[sel], kept[sel]
            np.save(work / f"plan-{k}.npy", plan)
            del plan
            packed.append(_map(ds, _pack_batch, work, f"pack-{k}", nproc, _fp(f"pack-{k}", out),
                               dict(plan=str(work / f"plan-{k}.npy"), every=dc.sample_every, tok=tok, L=dc.max_seq_length,
                                    dtype=np.dtype(dtype).name, min_tail=tokens.MIN_TAIL_TOKENS,
                                    **({"space": True} if dc.tokenizer == BYTE_TOKENIZER else {})),
                               f"tokenize + pack {c.id}", batch_size=max(1, _batch_size(raw[k]) // 4)))
        g = gather(packed, order, is_val, out, dc.max_seq_length, dtype)
        t_pack = time.time()
        tok.save_pretrained(str(out / "tokenizer"))
    finally:
        if old_par is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old_par
    del raw, text, packed
    work_bytes = sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    shutil.rmtree(work, ignore_errors=True)

    sw, st, bl = g["sent_words"], g["sent_tokens"], g["block_len"]
    words_all = int(n_words.sum())
    words_after = int((sw * np.arange(len(sw))).sum())
    tokens_after = int((st * np.arange(len(st))).sum())
    tpw = tokens_after / max(1, words_after)
    n_blocks = g["train_blocks"] + g["validation_blocks"]
    return {
        "hash": out.name.split(".")[0].removeprefix("data-"),
        "documents": len(cors), "train_documents": int((~is_val).sum()), "validation_documents": int(is_val.sum()),
        "sentences_before_sampling": int(n_sent.sum()), "sentences_after_sampling": int(kept.sum()),
        "words_before_sampling": words_all, "words_after_sampling": words_after,
        # Only sampled sentences are tokenized; the count before sampling is words x tokens/word.
        "tokens_before_sampling_estimate": int(round(words_all * tpw)),
        "tokens_after_sampling": tokens_after, "tokens_per_word": tpw,
        "vocab_size": len(tok), "tokenizer": dc.tokenizer, "max_seq_length": dc.max_seq_length,
        "tokenizer_training_sentences": n_tok_sample,
        "train_blocks": g["train_blocks"], "validation_blocks": g["validation_blocks"],
        "padding_fraction": float(1 - (bl * np.arange(len(bl))).sum() / max(1, n_blocks * dc.max_seq_length)),
        "sentence_length_words_hist": _hist(sw), "sentence_length_tokens_hist": _hist(st),
        "block_length_tokens_hist": _hist(bl),
        "seconds": {"text": t_text - t0, "tokenizer": t_tok - t_text, "tokenize_pack": t_pack - t_tok},
        "num_proc": nproc, "storage_dtype": np.dtype(dtype).name, "intermediate_bytes": work_bytes,
        "config": dataclasses.asdict(dc), "data_code_version": tokens.DATA_CODE_VERSION,
    }
