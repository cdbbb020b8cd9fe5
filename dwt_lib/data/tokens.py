"""Tokenizers and packing: load one (a Hub id through the mirror, the sample, a folder, or raw bytes) or train a
BERT-style WordPiece, tokenize documents and pack them into BERT blocks ``[CLS] s1 s2 ... [SEP] [PAD]...``.
The constants that change the processed data (:data:`DATA_CODE_VERSION`, :data:`MIN_TAIL_TOKENS`) enter its
cache hash (:func:`dwt_lib.data.prepare.data_hash`)."""
from __future__ import annotations

import itertools
from typing import Iterable, Sequence

import numpy as np

from dwt_lib.config.schema import BYTE_TOKENIZER, DataConfig
from dwt_lib.data.bytetok import BYTE_VOCAB_SIZE, byte_tokenizer
from dwt_lib.data.sources import resolve

# Bump when a change here, in corpus.py or in prepare.py changes the processed data: it is part of the cache hash.
DATA_CODE_VERSION = 3      # 3: deterministic tokenizer training (see train_tokenizer)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MIN_TAIL_TOKENS = 8   # a document's last block with fewer content tokens is dropped (~1 MLM target)



# ----------------------------------------------------------------------------- tokenizer

def load_tokenizer(name_or_path: str):
    """A fast tokenizer from a Hub id (through the mirror), ``sample:<path>`` or a saved folder; ``"bytes"``: the
    byte-level tokenizer (:mod:`dwt_lib.data.bytetok`)."""
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
