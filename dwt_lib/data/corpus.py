"""Pre-training corpus text: clean documents, split sentences, sample 1 in N, split by document.

Everything here is plain Python over strings and is deterministic: the same inputs give the same
sentences in the same order on every machine. These functions define the rules; :mod:`dwt_lib.data.pipeline`
applies them batch by batch on many cores (``sample_sentences`` and ``load_documents`` hold everything in
lists: they are the small-scale reference the tests compare the pipeline with). Tokenization, packing
and caching are in ``data.py``.

Sentence splitter: ``blingfire`` (a compiled, rule/model-based splitter shipped inside its wheel, so
nothing is downloaded at run time). Measured on 95k words of the Wikipedia mirror on one core:
blingfire 1.4-2.3M words/s, pysbd 28-30k words/s (50-80x slower: ~30 min per core for the 49M-word
mirror), with 96% of pysbd's sentences reproduced exactly by blingfire.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

_WS = re.compile(r"\s+")
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_SENT_END = tuple('.!?"\'\u201d\u2019)]:;\u2026')


@dataclass(frozen=True)
class Document:
    """One document of a corpus: ``key`` is ``"<corpus id>#<row index>"`` (its first row when rows are grouped),
    stable across runs."""
    key: str
    text: str


# ----------------------------------------------------------------------------- loading

def parquet_files(folder: Path, config: Optional[str], split: str) -> list[Path]:
    """The Parquet shards of ``split`` in a Hub-style local folder (``<config>/`` first when given), sorted."""
    roots = ([folder / config] if config else []) + [folder]
    for root in roots:
        if not root.is_dir():
            continue
        files = sorted(root.glob(f"{split}-*.parquet")) or sorted(root.glob(f"**/{split}-*.parquet"))
        if files:
            return files
    raise FileNotFoundError(f"no {split}-*.parquet shards under {folder}" + (f" (config {config})" if config else ""))


def iter_texts(source: str, config: Optional[str], split: str, text_column: str,
               max_documents: Optional[int]) -> Iterator[str]:
    """The first ``max_documents`` texts (all when None) of a corpus, in stored order.

    ``source`` is a local folder (read shard by shard with pyarrow, stopping early) or a Hub id
    (``datasets.load_dataset(source, config, split=split)``).
    """
    n = 0
    folder = Path(source)
    if folder.is_dir():
        import pyarrow.parquet as pq
        for f in parquet_files(folder, config, split):
            for batch in pq.ParquetFile(f).iter_batches(batch_size=1024, columns=[text_column]):
                for t in batch.column(0).to_pylist():
                    if max_documents is not None and n >= max_documents:
                        return
                    n += 1
                    yield t or ""
        return
    import datasets
    ds = datasets.load_dataset(source, config, split=split)
    if max_documents is not None:
        ds = ds.select(range(min(max_documents, len(ds))))
    for batch in ds.select_columns([text_column]).iter(batch_size=256):     # never the whole column at once
        yield from (t or "" for t in batch[text_column])


ROW_SEPARATOR = "\n\n"   # after every row of a grouped document: a blank line, so each row is a paragraph


def group_texts(texts: Iterable[str], rows_per_document: Optional[int]) -> Iterator[str]:
    """Consecutive rows joined into documents of ``rows_per_document`` rows (the last may be shorter), each
    row followed by :data:`ROW_SEPARATOR` so :func:`clean_document` takes every row as a paragraph (a corpus
    stored one sentence per row, BookCorpus on the Hub). ``None``: the rows unchanged (a row is a document)."""
    if rows_per_document is None:
        yield from texts
        return
    buf: list[str] = []
    for t in texts:
        buf.append((t or "") + ROW_SEPARATOR)
        if len(buf) == rows_per_document:
            yield "".join(buf)
            buf = []
    if buf:
        yield "".join(buf)


def load_documents(corpora: Sequence, max_documents: Optional[int] = None,
                   resolve=lambda x: x) -> list[Document]:
    """Documents of all corpora, interleaved round-robin (doc 0 of each corpus, then doc 1, ...).

    Taking the first ``max_documents`` of each corpus and interleaving them keeps every corpus
    represented when ``max_sentences`` later truncates the stream. ``corpora`` are
    :class:`~dwt_lib.config.CorpusSource`; ``resolve`` maps a Hub id to a local folder or the id.
    """
    per = []
    for c in corpora:
        src = resolve(c.id)
        own = getattr(c, "max_documents", None)                          # a corpus's own limit first
        limit = own if own is not None else max_documents
        k = getattr(c, "rows_per_document", None)                        # rows grouped into documents
        rows = iter_texts(src, c.config, c.split, c.text_column, limit if limit is None or k is None else limit * k)
        per.append([Document(f"{c.id}#{i * (k or 1)}", t) for i, t in enumerate(group_texts(rows, k))])
    out: list[Document] = []
    for i in range(max((len(p) for p in per), default=0)):
        out.extend(p[i] for p in per if i < len(p))
    return out


# ----------------------------------------------------------------------------- cleaning

def is_heading(paragraph: str, line_mode: bool) -> bool:
    """True for a line that is a title, not prose: no lowercase letter (``CHAPTER IV``, ``1908``),
    short and without sentence-final punctuation, or (one-paragraph-per-line text such as the
    Wikipedia mirror, where WikiExtractor ends section titles with a period) at most 5 words."""
    if not any(ch.islower() for ch in paragraph):
        return True
    n = paragraph.count(" ") + 1
    if n <= 12 and not paragraph.endswith(_SENT_END):
        return True
    return line_mode and n <= 5


def clean_document(text: str) -> list[str]:
    """Paragraphs of a document with whitespace normalised and empty and heading-only lines dropped.

    Text with blank lines between paragraphs (books, hard-wrapped at ~70 columns) joins the lines of a
    paragraph; text without blank lines (Wikipedia: one paragraph per line) takes each line.
    """
    line_mode = _BLANK_LINE.search(text) is None
    blocks = text.split("\n") if line_mode else _BLANK_LINE.split(text)
    out = []
    for b in blocks:
        p = _WS.sub(" ", b).strip()
        if p and not is_heading(p, line_mode):
            out.append(p)
    return out


# blingfire sometimes ends a sentence at a title ("Dr." | "Jones wrote ..."): glue those back.
_TITLES = ("Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Prof.", "Rev.", "Gen.", "Col.", "Capt.", "Lt.", "Sr.", "Jr.")


def split_sentences(paragraphs: Iterable[str]) -> list[str]:
    """Sentences of the given paragraphs, in order (blingfire; a sentence never spans paragraphs)."""
    import blingfire          # here, not at the top: a machine that only reads a prepared cache needs no splitter
    out = []
    for p in paragraphs:
        start = len(out)
        for s in blingfire.text_to_sentences(p).split("\n"):
            if not s.strip():
                continue
            if len(out) > start and out[-1].endswith(_TITLES):
                out[-1] = f"{out[-1]} {s}"
            else:
                out.append(s)
    return out


def document_sentences(docs: Sequence[Document]) -> list[list[str]]:
    """Clean and sentence-split every document: one list of sentences per document."""
    return [split_sentences(clean_document(d.text)) for d in docs]


# ----------------------------------------------------------------------------- sampling and split

def sample_sentences(doc_sents: Sequence[Sequence[str]], every: int,
                     max_sentences: Optional[int] = None) -> list[list[str]]:
    """Keep one sentence in every ``every``, counted over a global running index.

    Sentences are numbered 0, 1, 2, ... across all documents in order and those with index
    0, N, 2N, ... are kept (the paper: "uniformly selecting one sentence out of every four").
    A global index (rather than restarting in each document) keeps exactly 1/N of the corpus and
    does not favour the first sentence of short documents. ``max_sentences`` then keeps the first
    that many sampled sentences. Returns one (possibly empty) list per input document.
    """
    out: list[list[str]] = []
    g = 0          # global index of the document's first sentence
    kept = 0
    for sents in doc_sents:
        first = (-g) % every          # first local index with (g + i) % every == 0
        keep = list(sents[first::every])
        if max_sentences is not None:
            keep = keep[:max(0, max_sentences - kept)]
        kept += len(keep)
        out.append(keep)
        g += len(sents)
    return out


def validation_draws(keys: Sequence[str], seed: int) -> list[float]:
    """Per document key, ``sha256(seed:key)`` (first 8 bytes) as a number in [0, 1)."""
    return [int.from_bytes(hashlib.sha256(f"{seed}:{k}".encode()).digest()[:8], "big") / 2**64 for k in keys]


def validation_mask(keys: Sequence[str], fraction: float, seed: int) -> list[bool]:
    """Per document, True when it goes to validation: its :func:`validation_draws` value < fraction.

    Split by document, never by sentence, so no document contributes to both splits. When the hash
    would put no document in validation, the document with the smallest hash goes there.
    """
    u = validation_draws(keys, seed)
    mask = [x < fraction for x in u]
    if keys and not any(mask):
        mask[min(range(len(u)), key=u.__getitem__)] = True
    return mask
