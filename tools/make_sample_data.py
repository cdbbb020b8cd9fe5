"""Cut the sample shipped in ``dwt_lib/sample_data/`` from an offline mirror, deterministically.

    python tools/make_sample_data.py --mirror <mirror root> [--out dwt_lib/sample_data]

The mirror is laid out by Hub id (``<root>/nyu-mll/glue/<task>/<split>-*.parquet``,
``<root>/corpora/wikipedia-en/train-*.parquet``, ...; see the README of ``dwt_lib/sample_data``).
Every choice below is a fixed rule on the mirror's stored order (first N rows, a fixed window of
each book), so the same mirror gives the same rows, text and labels on every machine. Parquet files
are written with zstd compression and no pandas index; the Hub's ``huggingface`` schema metadata
(feature types) is kept, so ``datasets`` reads the sample as it reads the Hub repos.
"""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

WIKI_ARTICLES = 120          # the first 120 articles of corpora/wikipedia-en (~31k words)
BOOKS = 8                    # the first 8 books of corpora/gutenberg-en ...
BOOK_START = 0.10            # ... each cut to the whole paragraphs that start 10% into the book
BOOK_WORDS = 5000            # ... up to ~5,000 words (past the title pages and contents)
# GLUE rows: the first N rows of each split in stored order (None = the whole split).
GLUE = {
    "sst2": {"train": 2000, "validation": None},         # tests fine-tune on 2,000 SST-2 sentences
    "mrpc": {"train": 500, "validation": None},
    "cola": {"train": 500, "validation": None},
    "stsb": {"train": 500, "validation": 500},
    "rte": {"train": 200, "validation": None, "test": 50},  # test rows carry label -1
}
TOKENIZER = "google-bert/bert-base-uncased"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
_BLANK = re.compile(r"\n[ \t]*\n")


def _shards(folder: Path, split: str) -> list[Path]:
    files = sorted(folder.glob(f"{split}-*.parquet"))
    if not files:
        raise SystemExit(f"no {split}-*.parquet under {folder}: is --mirror an offline mirror laid out by Hub id?")
    return files


def first_rows(folder: Path, split: str, n: int | None) -> pa.Table:
    """The first ``n`` rows (all when None) of a split, in stored (shard, row) order."""
    tables, have = [], 0
    for f in _shards(folder, split):
        t = pq.read_table(f)
        tables.append(t)
        have += t.num_rows
        if n is not None and have >= n:
            break
    t = pa.concat_tables(tables)
    return t if n is None else t.slice(0, n)


def excerpt(text: str, start: float, words: int) -> str:
    """Whole blank-line-separated paragraphs from ``start`` (a fraction of the paragraphs) on,
    until ``words`` whitespace words are reached; paragraphs keep their line breaks."""
    paras = [p for p in _BLANK.split(text) if p.strip()]
    out, n = [], 0
    for p in paras[int(len(paras) * start):]:
        out.append(p.strip("\n"))
        n += len(p.split())
        if n >= words:
            break
    return "\n\n".join(out) + "\n"


def write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd", compression_level=19)
    print(f"{path}: {table.num_rows} rows, {path.stat().st_size / 1024:.0f} KiB")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mirror", required=True, type=Path, help="offline mirror root, laid out by Hub id")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "dwt_lib" / "sample_data")
    a = ap.parse_args(argv)
    m, out = a.mirror, a.out
    for sub in ("corpora", "nyu-mll", "google-bert"):          # regenerate from scratch, keep README.md
        shutil.rmtree(out / sub, ignore_errors=True)

    write(first_rows(m / "corpora/wikipedia-en", "train", WIKI_ARTICLES),
          out / "corpora/wikipedia-en/train-00000-of-00001.parquet")
    books = first_rows(m / "corpora/gutenberg-en", "train", BOOKS)
    texts = [excerpt(t, BOOK_START, BOOK_WORDS) for t in books.column("text").to_pylist()]
    books = books.set_column(books.schema.get_field_index("text"), books.schema.field("text"),
                             pa.array(texts, pa.string()))
    write(books, out / "corpora/gutenberg-en/train-00000-of-00001.parquet")
    for task, splits in GLUE.items():
        for split, n in splits.items():
            write(first_rows(m / "nyu-mll/glue" / task, split, n),
                  out / "nyu-mll/glue" / task / f"{split}-00000-of-00001.parquet")
    dst = out / TOKENIZER
    dst.mkdir(parents=True, exist_ok=True)
    for f in TOKENIZER_FILES:
        shutil.copyfile(m / TOKENIZER / f, dst / f)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"sample: {total / 2**20:.2f} MiB in {out}")


if __name__ == "__main__":
    main()
