"""Named model sizes (as Hugging Face ``BertConfig`` keys) and model construction.

Paper sizes: a 6-layer, 768-hidden, 12-head student (~67M parameters with the 30,522-token
BERT vocabulary) and teachers of 4, 2 and 1 layers at the same width, which gives the
paper's 0.78x / 0.57x / 0.46x parameter ratios. CPU sizes keep the layer counts and shrink
the width, so the ratios stay close to the paper's.
"""
from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM

_PAPER = dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, vocab_size=30522)
_MINI = dict(hidden_size=256, num_attention_heads=4, intermediate_size=1024)
_TINY = dict(hidden_size=64, num_attention_heads=2, intermediate_size=256)

#: size name -> BertConfig keyword arguments. ``vocab_size`` here pins the vocabulary
#: (paper sizes); otherwise it comes from the profile's tokenizer.
SIZES: dict[str, dict] = {}
for _prefix, _base in (("paper", _PAPER), ("mini", _MINI), ("tiny", _TINY)):
    SIZES[f"{_prefix}-student"] = dict(_base, num_hidden_layers=6)
    for _n in (4, 2, 1):
        SIZES[f"{_prefix}-teacher-{_n}l"] = dict(_base, num_hidden_layers=_n)


def bert_config(size: str, vocab_size: int | None = None, *, max_position_embeddings: int = 512,
                hidden_dropout_prob: float = 0.1, attention_probs_dropout_prob: float = 0.1) -> BertConfig:
    """The ``BertConfig`` of a named size. ``vocab_size`` is required unless the size pins one,
    and must match a pinned one."""
    if size not in SIZES:
        raise KeyError(f"unknown model size {size!r}; known sizes: {', '.join(sorted(SIZES))}")
    kw = dict(SIZES[size])
    pinned = kw.pop("vocab_size", None)
    if vocab_size is None:
        if pinned is None:
            raise ValueError(f"size {size!r} needs a vocab_size (it comes from the tokenizer)")
        vocab_size = pinned
    elif pinned is not None and pinned != vocab_size:
        raise ValueError(f"size {size!r} is defined for vocab {pinned}, got vocab_size={vocab_size}")
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings,
                      hidden_dropout_prob=hidden_dropout_prob,
                      attention_probs_dropout_prob=attention_probs_dropout_prob,
                      attn_implementation="sdpa", **kw)


def build_model(size: str, vocab_size: int | None = None, **kw) -> BertForMaskedLM:
    """A randomly initialised ``BertForMaskedLM`` of a named size (decoder tied to the word embeddings)."""
    return BertForMaskedLM(bert_config(size, vocab_size, **kw))


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n


def non_embedding_parameters(model) -> int:
    """Parameters outside the embedding tables (used for 6*N*tokens FLOP estimates)."""
    emb = sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)
    return count_parameters(model) - emb


class SparseMLM(torch.nn.Module):
    """Wraps a ``BertForMaskedLM`` so that only selected positions go through the MLM head.

    ``forward(input_ids, attention_mask, select)`` runs the encoder on every position, gathers
    the hidden states where ``select`` (bool, batch x seq) is true, and applies the head to those
    rows only: (n_selected, vocab) logits instead of (batch, seq, vocab). With 15% masking this
    skips ~85% of the head's matmul and of the soft loss's vocabulary-sized buffers (Cramming).
    A module, not a function, so DDP's hooks see the whole forward.
    """

    def __init__(self, mlm: BertForMaskedLM):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids, attention_mask, select):
        hidden = self.mlm.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.mlm.cls(hidden[select])


def train_flops_per_sequence(config: BertConfig, seq_len: int, head_tokens: float, train: bool = True) -> float:
    """Model FLOPs of one sequence: encoder matmuls + attention scores + the MLM head on ``head_tokens``.

    Per layer and token, the dense matmuls are 2 * (4 H^2 + 2 H I) FLOPs and attention adds
    2 * 2 * S * H (QK^T and AV). The head (transform H x H and decoder H x V) runs only on
    ``head_tokens`` positions (the masked ones with the sparse head). Training costs 3x the
    forward (backward = 2x forward); ``train=False`` gives the forward only (the teacher).
    Embedding look-ups are not FLOPs and are left out.
    """
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * H * H + 2 * H * I) * L * seq_len
    attn = 2 * 2 * seq_len * seq_len * H * L
    head = 2 * (H * H + H * config.vocab_size) * head_tokens
    return (3.0 if train else 1.0) * (dense + attn + head)
