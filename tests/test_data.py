"""Pre-training data: sampling, split, packing, cache, MLM masking.

Runs on the sample shipped in dwt_lib/sample_data (the smoke profile's sources): no mirror, no network.
Source resolution itself is tests/test_sources.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dwt_lib.data import corpus, masking, tokens, prepare as data
from dwt_lib.config.load import load_params

# 4 documents per corpus of the sample: 1,104 sentences, so 1-in-4 sampling gives 276 > 200.
SMALL = {"data.max_documents": 4, "data.max_sentences": 200, "data.vocab_size": 400,
         "data.max_seq_length": 32, "data.validation_fraction": 0.25}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWT_CACHE_DIR", str(d))
        yield d


@pytest.fixture(scope="module")
def small(cache_dir):
    return data.prepare_pretraining_data(load_params("smoke", SMALL), num_proc=1)


# ----------------------------------------------------------------------------- text

def test_sampling_keeps_exactly_every_4th_sentence_globally():
    lengths = [3, 1, 0, 7, 5, 2, 9]
    docs, i = [], 0
    for n in lengths:
        docs.append([f"s{j}" for j in range(i, i + n)])
        i += n
    kept = corpus.sample_sentences(docs, 4)
    assert [s for d in kept for s in d] == [f"s{j}" for j in range(0, i, 4)]
    assert [len(d) for d in kept] == [1, 0, 0, 2, 1, 1, 2]          # stays with its document
    capped = corpus.sample_sentences(docs, 4, max_sentences=3)
    assert [s for d in capped for s in d] == ["s0", "s4", "s8"]
    assert corpus.sample_sentences(docs, 1) == docs


def test_cleaning_drops_headings_and_joins_wrapped_lines():
    wiki = "Jane Doe is a writer from Ohio.\nEarly life.\nShe was born   in 1970. She moved away."
    assert corpus.clean_document(wiki) == ["Jane Doe is a writer from Ohio.",
                                           "She was born in 1970. She moved away."]
    book = "CHAPTER I\n\nIt was a dark\nand stormy night.\n\n\n  The end came.\n"
    assert corpus.clean_document(book) == ["It was a dark and stormy night.", "The end came."]
    assert corpus.split_sentences(["The war ended in 1945. Dr. Jones left at 5 p.m. today. Good!"]) == [
        "The war ended in 1945.", "Dr. Jones left at 5 p.m. today.", "Good!"]


def test_split_is_by_document(small):
    keys = [f"c#{i}" for i in range(500)]
    m = corpus.validation_mask(keys, 0.1, seed=0)
    assert 25 < sum(m) < 75 and m == corpus.validation_mask(keys, 0.1, seed=0)
    assert m != corpus.validation_mask(keys, 0.1, seed=1)
    st = small.stats
    assert st["train_documents"] > 0 and st["validation_documents"] > 0
    assert st["train_documents"] + st["validation_documents"] == st["documents"] == 8
    # no validation block's content appears in a training block (blocks are document-pure)
    strip = lambda t: tuple(x for x in t.tolist() if x >= 5)
    train_rows = {strip(r) for r in small.train[:]}
    assert not any(strip(r) in train_rows for r in small.validation[:] if len(strip(r)) >= 8)


# ----------------------------------------------------------------------------- packing

def test_blocks_start_with_cls_end_with_sep_and_never_mix_documents():
    L, C = 12, 10
    docs = [[[100 + i for i in range(7)], [110, 111, 112]],          # 10 tokens: one full block
            [[200 + i for i in range(25)]],                           # long sentence: truncated to 10
            [[300, 301], [302], [303 + i for i in range(12)]],        # 2 + 1 + 10 = 13: 2 blocks, tail 3 < 8 dropped
            [[400, 401, 402]],                                        # short doc: its only block, padded
            []]
    b = tokens.pack_blocks(docs, L, cls_id=2, sep_id=3, pad_id=0)
    assert b.shape == (4, L) and b.dtype == np.int32
    assert (b[:, 0] == 2).all() and ((b == 3).sum(1) == 1).all()
    for row in b:
        sep = int(np.where(row == 3)[0][0])
        assert (row[1:sep] > 3).all() and (row[sep + 1:] == 0).all()
        assert len({int(x) // 100 for x in row[1:sep]}) == 1          # one document per block
    assert b[1, 1:L - 1].tolist() == list(range(200, 210)) and b[1, L - 1] == 3
    assert b[2, 1:L - 1].tolist() == [300, 301, 302] + list(range(303, 310))
    assert b[3].tolist() == [2, 400, 401, 402, 3] + [0] * 7


def test_real_blocks_are_well_formed(small):
    tok, L = small.tokenizer, 32
    assert small.train.dtype == torch.long and small.train.shape[1] == L
    assert isinstance(small.train.array, np.memmap) and small.train.array.dtype == np.uint16   # on disk
    assert len(tok) == 400 and tok.cls_token_id is not None
    for x in (small.train[:], small.validation[:]):
        assert x.dtype == torch.long and x.shape[1] == L
        assert (x[:, 0] == tok.cls_token_id).all()
        assert ((x == tok.sep_token_id).sum(1) == 1).all()
        assert ((x == tok.cls_token_id).sum(1) == 1).all()
    assert (small.cache_dir / "tokenizer" / "tokenizer.json").exists()
    assert small.stats["sentences_after_sampling"] == 200
    assert small.stats["sentences_before_sampling"] / 4 > 200           # so capped by max_sentences
    assert [s["kind"] for s in small.stats["sources"]] == ["sample", "sample"]   # what was read, recorded


# ----------------------------------------------------------------------------- cache

def test_second_call_is_a_cache_hit(small, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("cache miss: the pipeline ran again")
    monkeypatch.setattr(data, "build", boom)          # where prepare_pretraining_data calls it
    for name in ("tokenize_documents", "train_tokenizer", "pack_blocks"):
        monkeypatch.setattr(tokens, name, boom)       # where they are defined (the pipeline calls them through it)
    again = data.prepare_pretraining_data(load_params("smoke", SMALL))
    assert again.hash == small.hash and again.cache_dir == small.cache_dir
    assert torch.equal(again.train[:], small.train[:]) and torch.equal(again.validation[:], small.validation[:])
    assert not list(small.cache_dir.parent.glob("*.tmp-*"))


def test_any_input_change_changes_the_cache_dir(cache_dir):
    base = load_params("smoke", SMALL)
    p0 = data.cache_path(base.data)
    assert p0.parent == cache_dir and p0.name == f"data-{data.data_hash(base.data)}"
    changes = {"data.sample_every": 2, "data.max_documents": 5, "data.max_sentences": 100,
               "data.validation_fraction": 0.3, "data.seed": 1, "data.vocab_size": 500,
               "data.max_seq_length": 64, "data.tokenizer": "google-bert/bert-base-uncased",
               "data.corpora": [{"id": "sample:corpora/wikipedia-en"}]}
    paths = {k: data.cache_path(base.replace(**{k: v}).data) for k, v in changes.items()}
    assert p0 not in paths.values() and len(set(paths.values())) == len(paths)
    assert data.cache_path(base.replace(**{"data.num_proc": 1}).data) == p0   # speed only


# ----------------------------------------------------------------------------- the parallel pipeline

def reference(dc, tok):
    """Today's rules written with Python lists (the pre-pipeline implementation): blocks and counts."""
    docs = corpus.load_documents(dc.corpora, dc.max_documents, resolve=data.resolve)
    sents = corpus.document_sentences(docs)
    sampled = corpus.sample_sentences(sents, dc.sample_every, dc.max_sentences)
    is_val = corpus.validation_mask([d.key for d in docs], dc.validation_fraction, dc.seed)
    tr = [s for s, v in zip(sampled, is_val) if not v]
    va = [s for s, v in zip(sampled, is_val) if v]
    kw = dict(cls_id=tok.cls_token_id, sep_id=tok.sep_token_id, pad_id=tok.pad_token_id, dtype=np.uint16)
    blocks = [tokens.pack_blocks(tokens.tokenize_documents(x, tok), dc.max_seq_length, **kw) for x in (tr, va)]
    return blocks, [s for d in tr for s in d], {
        "documents": len(docs), "validation_documents": sum(is_val),
        "sentences_before_sampling": sum(map(len, sents)), "sentences_after_sampling": sum(map(len, sampled)),
        "words_before_sampling": sum(len(s.split()) for d in sents for s in d),
        "words_after_sampling": sum(len(s.split()) for d in sampled for s in d)}


def test_pipeline_equals_the_list_reference(small):
    dc = load_params("smoke", SMALL).data
    (tr, va), train_sentences, counts = reference(dc, small.tokenizer)
    assert np.array_equal(np.asarray(small.train.array), tr) and np.array_equal(np.asarray(small.validation.array), va)
    assert {k: small.stats[k] for k in counts} == counts
    # the tokenizer: trained on every sampled training sentence, in order, deterministically
    assert small.stats["tokenizer_training_sentences"] == len(train_sentences)
    assert tokens.train_tokenizer(train_sentences, dc.vocab_size).get_vocab() == small.tokenizer.get_vocab()


def test_tokenizer_training_is_deterministic_and_matches_wordpiece():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    docs = corpus.load_documents(load_params("smoke").data.corpora[:1], 200, resolve=data.resolve)   # Wikipedia
    sents = [s for d in corpus.document_sentences(docs) for s in d][:3000]
    a, b = (tokens.train_tokenizer(iter(sents), 500) for _ in range(2))
    assert a.get_vocab() == b.get_vocab() and len(a) == 500
    ref = Tokenizer(models.WordPiece(unk_token="[UNK]"))      # tokenizers' own (non-deterministic) trainer
    ref.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    ref.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    ref.train_from_iterator(sents, trainers.WordPieceTrainer(vocab_size=500, special_tokens=tokens.SPECIAL_TOKENS,
                                                             min_frequency=2, show_progress=False))
    ours, theirs = set(a.get_vocab()), set(ref.get_vocab())
    assert len(ours ^ theirs) <= 6 and {"##s", "the"} <= ours          # the same pieces, up to merge ties
    enc = a("Tokenization is deterministic.")["input_ids"]
    assert enc[0] == a.cls_token_id and enc[-1] == a.sep_token_id and a.unk_token_id not in enc


def test_same_blocks_for_one_and_two_processes(small, tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))
    two = data.prepare_pretraining_data(load_params("smoke", SMALL), num_proc=2)
    assert two.stats["num_proc"] == 2 and small.stats["num_proc"] == 1
    for a, b in ((two.train, small.train), (two.validation, small.validation)):
        assert data.blocks_sha256(a) == data.blocks_sha256(b)
    assert two.tokenizer.get_vocab() == small.tokenizer.get_vocab()


README = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: texts/part-*.parquet
- config_name: empty
  data_files:
  - split: train
    path: nothing/part-*.parquet
---
# org/books: a local dataset folder standing in for a Hub repo
"""


@pytest.fixture(scope="module")
def hub_like(tmp_path_factory):
    """``<mirror>/org/books``: texts under a path only the README's ``configs:`` block names, column ``body``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    mirror = tmp_path_factory.mktemp("mirror")
    folder = mirror / "org" / "books"
    (folder / "texts").mkdir(parents=True)
    (folder / "nothing").mkdir()
    (folder / "README.md").write_text(README)
    texts = list(corpus.iter_texts(data.resolve("sample:corpora/wikipedia-en"), None, "train", "text", 12))
    pq.write_table(pa.table({"body": texts[:7]}), folder / "texts" / "part-0.parquet")
    pq.write_table(pa.table({"body": texts[7:]}), folder / "texts" / "part-1.parquet")
    pq.write_table(pa.table({"body": pa.array([], pa.string())}), folder / "nothing" / "part-0.parquet")
    return mirror, texts


def _hub_cfg(**source):
    return load_params("smoke", {**SMALL, "data.corpora": [{"id": "org/books", **source}], "data.max_documents": None,
                                 "data.max_sentences": None, "data.validation_fraction": 0.2})


def test_local_folder_is_read_exactly_as_a_hub_id(hub_like, tmp_path, monkeypatch):
    import datasets
    mirror, texts = hub_like
    monkeypatch.setenv("DWT_DATA_DIR", str(mirror))
    calls = []
    real = datasets.load_dataset
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or real(*a, **k))
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path / "a"))
    d = data.prepare_pretraining_data(_hub_cfg(config="en", text_column="body"))
    # the same call a Hub id gets (load_dataset(id, config, split=...)), with the mirror folder in its place
    assert calls == [((str(mirror / "org/books"), "en"), {"split": "train", "streaming": False})]
    sents = [corpus.split_sentences(corpus.clean_document(t)) for t in texts]
    assert d.stats["documents"] == 12 and d.stats["sentences_before_sampling"] == sum(map(len, sents))
    assert d.stats["words_before_sampling"] == sum(len(s.split()) for x in sents for s in x)
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path / "b"))            # streamed: the same blocks
    s = data.prepare_pretraining_data(_hub_cfg(config="en", text_column="body"), streaming=True)
    assert data.blocks_sha256(s.train) == data.blocks_sha256(d.train) and calls[-1][1]["streaming"] is True
    assert data.blocks_sha256(s.validation) == data.blocks_sha256(d.validation)


@pytest.mark.parametrize("source, words", [({"config": "en"}, ["org/books", "no column 'text'", "body", "text_column"]),
                                           ({"config": "empty", "text_column": "body"},
                                            ["org/books", "'empty'", "no rows"])])
def test_missing_column_or_empty_corpus_is_one_clear_error(hub_like, tmp_path, monkeypatch, source, words):
    monkeypatch.setenv("DWT_DATA_DIR", str(hub_like[0]))
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))
    with pytest.raises(data.DataSourceError) as e:
        data.prepare_pretraining_data(_hub_cfg(**source))
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "\n" not in str(e.value) and not [p for p in tmp_path.glob("data-*") if p.is_dir()]   # no entry left


# ----------------------------------------------------------------------------- masking

@pytest.fixture(scope="module")
def bert():
    return tokens.load_tokenizer("sample:google-bert/bert-base-uncased")


def _batch(tok, n=400, L=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1000, len(tok), (n, L), generator=g)
    lens = torch.randint(L // 4, L - 1, (n,), generator=g)
    pos = torch.arange(L)[None]
    x = torch.where(pos < lens[:, None], x, torch.full_like(x, tok.pad_token_id))
    x[:, 0] = tok.cls_token_id
    x[torch.arange(n), lens] = tok.sep_token_id
    return x


def test_masking_rates_and_special_tokens(bert):
    x = _batch(bert)
    out, labels = masking.mask_tokens(x, bert, 0.15, torch.Generator().manual_seed(1))
    special = torch.isin(x, torch.tensor(bert.all_special_ids))
    sel = labels != -100
    assert not (sel & special).any() and torch.equal(out[special], x[special])
    assert torch.equal(labels[sel], x[sel])
    n = (~special).sum().item()
    assert abs(sel.sum().item() / n - 0.15) < 0.01
    k = sel.sum().item()
    to_mask = (out[sel] == bert.mask_token_id).sum().item() / k
    kept = (out[sel] == x[sel]).sum().item() / k
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02 and abs(1 - to_mask - kept - 0.1) < 0.02
    assert not torch.isin(out[sel & (out != bert.mask_token_id)], torch.tensor(bert.all_special_ids)).any()
    assert torch.equal(out[~sel], x[~sel])
    assert torch.equal(masking.attention_mask(x, bert.pad_token_id), (x != bert.pad_token_id).long())


def test_masking_is_fully_determined_by_the_generator(bert):
    x = _batch(bert, n=32)
    a = masking.mask_tokens(x, bert, 0.15, torch.Generator().manual_seed(7))
    b = masking.mask_tokens(x, bert, 0.15, torch.Generator().manual_seed(7))
    c = masking.mask_tokens(x, bert, 0.15, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert torch.equal(x, _batch(bert, n=32))                         # input left untouched


# ----------------------------------------------------------------------------- cost before work

def test_plan_estimates_data_preparation(small, tmp_path, monkeypatch):
    from dwt_lib.studies.plan import data_prep_estimate, format_data_estimate
    got = data_prep_estimate(load_params("smoke", SMALL))                 # prepared: its own figures
    assert got["source"].startswith("measured") and got["words"] == small.stats["words_before_sampling"]
    assert got["blocks_bytes"] == (len(small.train) + len(small.validation)) * 32 * 2
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path))                  # nothing prepared: assumed words
    paper = load_params("paper")
    e = data_prep_estimate(paper, cores=8)
    assert e["words"] == 3.3e9 and e["tokens"] == pytest.approx(3.3e9 * e["tokens"] / e["words"])
    assert e["tokens"] < e["words"] / paper.data.sample_every * 2 and 0 < e["hours_64"] < e["hours"]
    assert "3.3e+09 words" in format_data_estimate(e) and "h on 8 core(s)" in format_data_estimate(e)
    # a profile that caps documents reads that many, not the whole corpus (mini: 1,500 articles, 2,400
    # BookCorpus documents of 256 rows)
    mini = data_prep_estimate(load_params("mini"), cores=2)
    assert mini["words"] == pytest.approx(1500 * 390 + 2400 * 256 * 10.8)
