"""Corpora stored one sentence per row (BookCorpus on the Hub): ``rows_per_document`` groups consecutive rows
into documents, by global row index (the same for every ``num_proc``), and never groups a stand-in."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dwt_lib.data import corpus, prepare as data, pipeline
from dwt_lib.config.load import load_params

K = 7          # rows per document in these tests


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """``org/sents``: 150 sentence rows (one empty, one null) cut from the sample's Wikipedia, laid out by Hub id;
    ``corpora/books``: 3 multi-paragraph texts, a stand-in whose rows are whole documents."""
    root = tmp_path_factory.mktemp("mirror")
    docs = corpus.load_documents(load_params("smoke").data.corpora[:1], 6, resolve=data.resolve)
    sents = [s for d in corpus.document_sentences(docs) for s in d][:148]
    rows = sents[:40] + [""] + sents[40:90] + [None] + sents[90:]
    (root / "org" / "sents").mkdir(parents=True)
    pq.write_table(pa.table({"text": rows}), root / "org" / "sents" / "train-00000-of-00001.parquet")
    (root / "corpora" / "books").mkdir(parents=True)
    books = ["\n\n".join(sents[i:i + 30]) for i in (0, 30, 60)]
    pq.write_table(pa.table({"text": books}), root / "corpora" / "books" / "train-00000-of-00001.parquet")
    return root, rows


def _cfg(corpus_source: dict, **extra):
    return load_params("smoke", {"data.corpora": [corpus_source], "data.max_documents": None,
                                 "data.max_sentences": None, "data.sample_every": 1, "data.vocab_size": 400,
                                 "data.max_seq_length": 64, "data.validation_fraction": 0.2, **extra})


def test_grouping_rule_and_arrow_version_agree(tmp_path):
    import datasets
    rows = [f"Row number {i} ends here." for i in range(20)]
    rows[5] = None
    want = list(corpus.group_texts(rows, 3))
    assert len(want) == 7 and want[0] == "Row number 0 ends here.\n\nRow number 1 ends here.\n\nRow number 2 ends here.\n\n"
    assert want[-1] == "Row number 18 ends here.\n\nRow number 19 ends here.\n\n"          # the last is shorter
    assert corpus.clean_document(want[0]) == rows[:3]                                  # each row a paragraph
    assert list(corpus.group_texts(rows, None)) == rows
    ds = datasets.Dataset.from_dict({"text": rows})
    for window in (1, 2, 100):                                                         # windows change nothing
        got = pipeline.group_rows(ds, 3, tmp_path / f"g{window}.arrow", window=window)
        assert got["text"] == want


def test_grouped_documents_and_same_blocks_for_one_and_two_processes(mirror, tmp_path, monkeypatch):
    root, rows = mirror
    monkeypatch.setenv("DWT_DATA_DIR", str(root))
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))
    cfg = _cfg({"id": "org/sents", "rows_per_document": K})
    docs = corpus.load_documents(cfg.data.corpora, None, resolve=data.resolve)      # the list reference
    assert [d.key for d in docs] == [f"org/sents#{r}" for r in range(0, len(rows), K)]
    assert [corpus.clean_document(d.text) for d in docs[:2]] == [rows[:K], rows[K:2 * K]]
    monkeypatch.setattr(pipeline, "BATCH_BYTES", 2000)       # a few documents per batch: both workers get some
    one = data.prepare_pretraining_data(cfg, num_proc=1)
    assert one.stats["documents"] == len(docs) == -(-len(rows) // K)
    assert one.stats["sentences_before_sampling"] == sum(map(len, corpus.document_sentences(docs)))
    # a block holds running text: far less padding than one sentence per block
    assert one.stats["padding_fraction"] < 0.2
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path / "two"))
    two = data.prepare_pretraining_data(cfg, num_proc=2)
    assert two.stats["num_proc"] == 2 and one.hash == two.hash
    for a, b in ((one.train, two.train), (one.validation, two.validation)):
        assert data.blocks_sha256(a) == data.blocks_sha256(b)
    # max_documents counts grouped documents: the first 3 documents are the first 3 x K rows
    three = data.prepare_pretraining_data(_cfg({"id": "org/sents", "rows_per_document": K, "max_documents": 3}),
                                          num_proc=1)
    assert three.stats["documents"] == 3
    ungrouped = data.prepare_pretraining_data(_cfg({"id": "org/sents"}), num_proc=1)
    assert ungrouped.stats["documents"] == len(rows) and ungrouped.hash != one.hash


def test_a_stand_in_is_read_ungrouped(mirror, tmp_path, monkeypatch):
    root, _ = mirror
    monkeypatch.setenv("DWT_DATA_DIR", str(root))
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))
    cfg = _cfg({"id": "org/not-mirrored", "mirror": "corpora/books", "rows_per_document": 2})
    got = data.prepare_pretraining_data(cfg, num_proc=1)
    assert got.stats["sources"][0]["stand_in"] and got.stats["documents"] == 3      # 3 books, not 2 groups
    # the profiles: BookCorpus grouped on the Hub, its mini stand-in (whole books per row) not
    for profile in ("mini", "paper"):
        bc = [c for c in load_params(profile).data.corpora if c.id == "bookcorpus/bookcorpus"][0]
        assert bc.rows_per_document == 256
    assert load_params("mini").data.corpora[1].mirror == "corpora/gutenberg-en"


def test_rows_per_document_must_be_a_positive_integer():
    from dwt_lib.core.errors import ConfigError
    for bad in (0, -3, 2.5, "x"):
        with pytest.raises(ConfigError, match=r"data\.corpora\[0\]\.rows_per_document"):
            _cfg({"id": "org/sents", "rows_per_document": bad})
