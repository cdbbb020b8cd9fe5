"""Tokenize + pack throughput of the data pipeline against raw ``tokenizers`` ``encode_batch``.

Both paths tokenize the same sentences (cleaned and split from the offline corpora, not timed) with
BERT's uncased WordPiece. The pipeline path is ``tokens.tokenize_documents`` + ``tokens.pack_blocks``;
the raw path is one ``Tokenizer.encode_batch`` call. Prints tokens/s of each and
``data_pipeline_vs_raw_encode_batch: <ratio> (target >= 0.7)``; exits 1 when the target is missed.

    python bench/bench_data.py                 # 5M words
    python bench/bench_data.py --words 0       # the whole mirror (~49M words)
"""
from __future__ import annotations

import argparse
import sys
import time

from dwt_lib.data import corpus, tokens, prepare as data
from dwt_lib.config.load import load_params

TARGET = 0.7


def _sentences(words: int) -> tuple[list[list[str]], float]:
    """Documents (as sentence lists) of the paper-profile corpora through the mirror, up to ``words`` words."""
    cfg = load_params("mini")           # the mirror's corpora (mini's stand-ins); every document, no sampling
    t = time.time()
    out, n = [], 0
    for c in cfg.data.corpora:
        src = data.require(data.resolve_corpus(c), "corpus").where
        for text in corpus.iter_texts(src, c.config, c.split, c.text_column, None):
            s = corpus.split_sentences(corpus.clean_document(text))
            out.append(s)
            n += sum(len(x.split()) for x in s)
            if words and n >= words:
                return out, time.time() - t
    return out, time.time() - t


def run(words: int = 5_000_000, max_seq_length: int = 128) -> dict:
    """Time both paths on about ``words`` words (0 = all) and return the numbers, ratio included."""
    docs, t_text = _sentences(words)
    n_words = sum(len(s.split()) for d in docs for s in d)
    tok = tokens.load_tokenizer("google-bert/bert-base-uncased")
    flat = [s for d in docs for s in d]
    backend = tok.backend_tokenizer

    t = time.time()
    enc = backend.encode_batch(flat, add_special_tokens=False)
    t_raw = time.time() - t
    n_tokens = sum(len(e) for e in enc)
    del enc

    t = time.time()
    ids = tokens.tokenize_documents(docs, tok)
    t_tok = time.time() - t
    blocks = tokens.pack_blocks(ids, max_seq_length, tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
    t_pipe = time.time() - t
    res = {"words": n_words, "sentences": len(flat), "tokens": n_tokens, "blocks": int(len(blocks)),
           "text_seconds": t_text, "raw_seconds": t_raw, "pipeline_seconds": t_pipe,
           "pipeline_tokenize_seconds": t_tok, "pipeline_pack_seconds": t_pipe - t_tok,
           "raw_tokens_per_s": n_tokens / t_raw, "pipeline_tokens_per_s": n_tokens / t_pipe}
    res["data_pipeline_vs_raw_encode_batch"] = res["pipeline_tokens_per_s"] / res["raw_tokens_per_s"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--words", type=int, default=5_000_000, help="words to tokenize (0 = whole mirror)")
    r = run(ap.parse_args().words)
    print(f"words {r['words']:,}  sentences {r['sentences']:,}  tokens {r['tokens']:,}  blocks {r['blocks']:,}")
    print(f"clean + sentence split: {r['text_seconds']:.1f} s ({r['words'] / r['text_seconds']:,.0f} words/s, not timed below)")
    print(f"raw encode_batch:       {r['raw_tokens_per_s']:,.0f} tokens/s ({r['raw_seconds']:.1f} s)")
    print(f"pipeline tokenize+pack: {r['pipeline_tokens_per_s']:,.0f} tokens/s ({r['pipeline_seconds']:.1f} s: "
          f"tokenize {r['pipeline_tokenize_seconds']:.1f} s, pack {r['pipeline_pack_seconds']:.1f} s)")
    ratio = r["data_pipeline_vs_raw_encode_batch"]
    print(f"data_pipeline_vs_raw_encode_batch: {ratio:.2f} (target >= {TARGET})")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
