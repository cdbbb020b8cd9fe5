"""Named model sizes (as Hugging Face ``BertConfig`` keys), the encoder architectures and model construction.

Paper sizes: a 6-layer, 768-hidden, 12-head student (~67M parameters with the 30,522-token
BERT vocabulary) and teachers of 4, 2 and 1 layers at the same width, which gives the
paper's 0.78x / 0.57x / 0.46x parameter ratios. CPU sizes keep the layer counts and shrink
the width, so the ratios stay close to the paper's.

A profile may define more sizes (``model.sizes``), e.g. ``{mini-student: {layers: 6, hidden: 128,
heads: 2}}``: :func:`size_from_spec` turns such an entry into ``BertConfig`` keywords and
:func:`resolve_size` looks a name up in the profile's sizes first, then in :data:`SIZES`.

A size is architecture-neutral (layers, width, heads, FFN width); ``model.arch`` picks the encoder it builds, through
one small adapter per architecture (:data:`ARCHS`, :func:`arch_of`): ``bert`` (the paper's: learned positions,
post-LayerNorm, GELU FFN) or ``modernbert`` (``transformers.ModernBertForMaskedLM``: rotary positions, pre-LayerNorm,
GeGLU FFN, global attention in every layer). Everything that reaches inside a model (the sparse MLM head, the
classifier, remapping, growth, FLOPs) goes through the adapter, so the training loop is the same for both.
"""
from __future__ import annotations

import re

import torch
from transformers import BertConfig, BertForMaskedLM

from dwt_lib.config.sizes import ARCHS as ARCH_NAMES
from dwt_lib.config.sizes import SIZES, resolve_size

#: Name of the CPU training attention (registered with transformers below): two matmuls in the
#: input dtype (bf16 under autocast) and a float32 softmax. On CPU, for BERT's short sequences,
#: it is ~3x faster forward+backward than SDPA's flash kernel (whose backward is slow there).
CPU_ATTENTION = "dwt_cpu_attention"


def _cpu_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """``attention_mask``: SDPA's format (bool, True = attend; or additive float), or None."""
    scores = torch.matmul(query, key.transpose(2, 3)).float() * (scaling or query.size(-1) ** -0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = torch.nn.functional.softmax(scores, dim=-1).to(value.dtype)
    probs = torch.nn.functional.dropout(probs, p=dropout, training=module.training)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), None


def _register_cpu_attention() -> None:
    """Make :data:`CPU_ATTENTION` known to transformers (on first use, not at import: importing
    this module stays cheap and works with a stubbed ``transformers``)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    AttentionInterface.register(CPU_ATTENTION, _cpu_attention)
    AttentionMaskInterface.register(CPU_ATTENTION, sdpa_mask)      # bool masks, None without padding


def use_device_attention(model, device) -> None:
    """On CPU, switch ``model`` (any BERT of ours, wrapped or not) to :data:`CPU_ATTENTION`;
    elsewhere leave SDPA. Same math as SDPA up to rounding (softmax in float32 either way)."""
    if torch.device(device).type == "cpu":
        _register_cpu_attention()
        getattr(model, "mlm", model).set_attn_implementation(CPU_ATTENTION)


def _size_kw(size, vocab_size, sizes):
    kw = dict(size) if isinstance(size, dict) else resolve_size(size, sizes)
    pinned = kw.pop("vocab_size", None)
    if vocab_size is None:
        if pinned is None:
            raise ValueError(f"size {size!r} needs a vocab_size (it comes from the tokenizer)")
        vocab_size = pinned
    elif pinned is not None and pinned != vocab_size:
        raise ValueError(f"size {size!r} is defined for vocab {pinned}, got vocab_size={vocab_size}")
    return kw, vocab_size


def bert_config(size: str | dict, vocab_size: int | None = None, *, sizes: dict | None = None,
                max_position_embeddings: int = 512, hidden_dropout_prob: float = 0.1,
                attention_probs_dropout_prob: float = 0.1, initializer_range: float | None = None,
                special_ids: dict | None = None) -> BertConfig:
    """The ``BertConfig`` of a size: a name (looked up in ``sizes``, a profile's ``model.sizes``,
    then in the presets) or a dict of ``BertConfig`` keywords (a run's resolved ``shape``).
    ``vocab_size`` is required unless the size pins one, and must match a pinned one. ``special_ids``
    (pad/cls/sep ids) is accepted for symmetry with :func:`modernbert_config` and unused: BERT's embeddings
    treat no id specially (our tokenizers put [PAD] at 0, BertConfig's default)."""
    kw, vocab_size = _size_kw(size, vocab_size, sizes)
    if initializer_range is not None:
        kw["initializer_range"] = initializer_range
    return BertConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings,
                      hidden_dropout_prob=hidden_dropout_prob,
                      attention_probs_dropout_prob=attention_probs_dropout_prob,
                      attn_implementation="sdpa", **kw)


def modernbert_config(size: str | dict, vocab_size: int | None = None, *, sizes: dict | None = None,
                      max_position_embeddings: int = 512, hidden_dropout_prob: float = 0.1,
                      attention_probs_dropout_prob: float = 0.1, initializer_range: float | None = None,
                      special_ids: dict | None = None) -> ModernBertConfig:
    """The ``ModernBertConfig`` of a size (same arguments as :func:`bert_config`): the size's layers, width, heads
    and FFN width (GeGLU: ``Wi`` is hidden x 2 intermediate), global attention in every layer (the sequences are
    short: no sliding window), ``max_position_embeddings`` for the rotary cache (positions past it still work).
    Dropout: ``hidden_dropout_prob`` -> embedding and MLP dropout, ``attention_probs_dropout_prob`` -> attention
    dropout. ``special_ids`` (``pad``, ``cls``, ``sep``) must be the tokenizer's: the embedding's padding row is
    ``pad`` (ModernBERT's default ids, 50281-50283, lie outside a small vocabulary). Everything else is
    transformers' default (the lead's probes used the same)."""
    from transformers import ModernBertConfig      # here, not at the top: loading a profile needs models.SIZES only
    kw, vocab_size = _size_kw(size, vocab_size, sizes)
    ids = dict(special_ids or {"pad": 0, "cls": 2, "sep": 3})
    extra = {} if initializer_range is None else {"initializer_range": initializer_range}
    return ModernBertConfig(
        vocab_size=vocab_size, hidden_size=kw["hidden_size"], num_hidden_layers=kw["num_hidden_layers"],
        num_attention_heads=kw["num_attention_heads"], intermediate_size=kw["intermediate_size"],
        max_position_embeddings=max_position_embeddings, global_attn_every_n_layers=1,
        embedding_dropout=hidden_dropout_prob, mlp_dropout=hidden_dropout_prob,
        attention_dropout=attention_probs_dropout_prob, pad_token_id=ids["pad"], cls_token_id=ids["cls"],
        bos_token_id=ids["cls"], sep_token_id=ids["sep"], eos_token_id=ids["sep"], attn_implementation="sdpa",
        **extra)


def build_model(size: str | dict, vocab_size: int | None = None, arch: str = "bert", **kw):
    """A randomly initialised masked LM of a size and architecture (``BertForMaskedLM`` or
    ``ModernBertForMaskedLM``; see :func:`bert_config` / :func:`modernbert_config`; decoder tied to the word
    embeddings)."""
    a = arch_of(arch)
    return a.mlm_class(a.make_config(size, vocab_size, **kw))


def count_parameters(model, trainable_only: bool = False) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    seen, n = set(), 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        n += p.numel()
    return n



class SparseMLM(torch.nn.Module):
    """Wraps a masked LM of either architecture so that only selected positions go through the MLM head.

    ``forward(input_ids, attention_mask, select)`` runs the encoder on every position, gathers
    the hidden states where ``select`` (bool, batch x seq) is true, and applies the head to those
    rows only: (n_selected, vocab) logits instead of (batch, seq, vocab). With 15% masking this
    skips ~85% of the head's matmul and of the soft loss's vocabulary-sized buffers (Cramming).
    A module, not a function, so DDP's hooks see the whole forward.

    ``selected_last_layer=True`` also runs the *last encoder layer* on the selected rows only:
    keys and values from every position (attention needs them), but the query projection,
    attention output, feed-forward and LayerNorms only where ``select`` is true (~15% of the
    rows), the default. The selected outputs are the same function of the inputs (only the dropout draws of
    a model in train mode differ); for the 4-layer teacher it saves ~1/6 of its forward, for
    the 6-layer student ~1/9 of a training step. When more than half the rows are selected
    (soft loss on all positions) it runs the plain path. (BERT only, for now: ModernBERT runs its whole
    encoder and gathers the selected rows before the head.)
    """

    def __init__(self, mlm, selected_last_layer: bool = True):
        super().__init__()
        self.mlm = mlm
        self.arch = arch_of(mlm)
        self.selected_last_layer = selected_last_layer

    def forward(self, input_ids, attention_mask, select):
        return self.arch.selected_logits(self.mlm, input_ids, attention_mask, select,
                                         self.selected_last_layer and 2 * int(select.sum()) < select.numel())


class _StopBeforeLastLayer(Exception):
    pass


def _last_layer_on_selected(bert, input_ids, attention_mask, select, **bert_kw):
    """Hidden states after the last encoder layer, (n_selected, H) in ``select``'s row-major
    order, computing that layer's queries, attention output and feed-forward for the selected
    rows only. The encoder below runs unchanged (a pre-hook stops it before the last layer)."""
    import torch.nn.functional as F
    layer = bert.encoder.layer[-1]
    box = {}

    def grab(module, args, kwargs):          # the last layer's input, then stop the encoder
        box["h"] = args[0] if args else kwargs["hidden_states"]
        raise _StopBeforeLastLayer

    handle = layer.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        bert(input_ids=input_ids, attention_mask=attention_mask, **bert_kw)
    except _StopBeforeLastLayer:
        pass
    finally:
        handle.remove()
    h = box["h"]
    sa = layer.attention.self
    B, S, H = h.shape
    nh, d = sa.num_attention_heads, sa.attention_head_size
    k = sa.key(h).view(B, S, nh, d).transpose(1, 2)
    v = sa.value(h).view(B, S, nh, d).transpose(1, 2)
    h_sel = h[select]                                        # (N, H)
    bi, si = select.nonzero(as_tuple=True)
    slot = (select.long().cumsum(1) - 1)[bi, si]             # rank of each selected row in its sequence
    m = int(slot.max()) + 1 if len(slot) else 1
    q_sel = sa.query(h_sel)
    q = q_sel.new_zeros(B, m, H).index_put((bi, slot), q_sel).view(B, m, nh, d).transpose(1, 2)
    mask = None
    if attention_mask is not None and not bool(attention_mask.all()):
        mask = attention_mask.bool()[:, None, None, :]
    p = sa.dropout.p if layer.training else 0.0
    if bert.config._attn_implementation == CPU_ATTENTION:
        ctx = _cpu_attention(sa, q, k, v, mask, sa.scaling, p)[0]             # (B, m, nh, d)
    else:
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=sa.scaling, dropout_p=p).transpose(1, 2)
    ctx = ctx.reshape(B, m, H)[bi, slot]                     # back to (N, H)
    a = layer.attention.output(ctx, h_sel)
    return layer.output(layer.intermediate(a), a)


def classifier_logits(clf, input_ids, token_type_ids=None, attention_mask=None):
    """The sequence classifier's logits, either architecture (:meth:`Arch.classifier_logits`)."""
    return arch_of(clf).classifier_logits(clf, input_ids, token_type_ids, attention_mask)


def _bert_classifier_logits(clf, input_ids, token_type_ids=None, attention_mask=None):
    """``BertForSequenceClassification(...).logits`` with the last encoder layer run on the [CLS]
    row only (the pooler reads nothing else): the same function, ~1/L of the encoder less."""
    select = torch.zeros(input_ids.shape, dtype=torch.bool, device=input_ids.device)
    select[:, 0] = True
    h = _last_layer_on_selected(clf.bert, input_ids, attention_mask, select, token_type_ids=token_type_ids)
    return clf.classifier(clf.dropout(clf.bert.pooler(h[:, None, :])))


def train_flops_per_sequence(config, seq_len: int, head_tokens: float, train: bool = True) -> float:
    """Model FLOPs of one sequence: encoder matmuls + attention scores + the MLM head on ``head_tokens``.

    Per layer and token, the dense matmuls are 2 * (4 H^2 + 2 H I) FLOPs for BERT (Q, K, V, output; FFN in and
    out) and 2 * (4 H^2 + 3 H I) for ModernBERT (its GeGLU ``Wi`` is H x 2I); attention adds 2 * 2 * S * H
    (QK^T and AV). The head (transform H x H and decoder H x V) runs only on ``head_tokens`` positions (the
    masked ones with the sparse head). Training costs 3x the forward (backward = 2x forward); ``train=False``
    gives the forward only (the teacher). Embedding look-ups are not FLOPs and are left out.
    """
    H, I, L = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    ffn = 3 if arch_of(config).name == "modernbert" else 2
    dense = 2 * (4 * H * H + ffn * H * I) * L * seq_len
    attn = 2 * 2 * seq_len * seq_len * H * L
    head = 2 * (H * H + H * config.vocab_size) * head_tokens
    return (3.0 if train else 1.0) * (dense + attn + head)


# ----------------------------------------------------------------------------- architectures

class Arch:
    """What the library needs to know about one encoder architecture (one instance per name in :data:`ARCHS`).

    ``layer_re`` matches a state-dict name inside the layer stack (groups ``pre``, ``i``, ``post``) for remapping and
    growth; ``identity_out`` names the parameters of a layer that, set to zero, make a pre-LayerNorm layer the
    identity (None: post-LayerNorm, growth gates the layer instead); ``new_head`` the sequence-classifier modules
    that fine-tuning initialises from its seed (the rest comes from the checkpoint)."""
    name: str
    mlm_class: type
    layer_re: re.Pattern
    identity_out: tuple | None
    width_keys = ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")

    def make_config(self, size, vocab_size=None, **kw):
        raise NotImplementedError

    def base(self, model):
        """The encoder without a head (``.bert`` / ``.model``)."""
        return model.base_model

    def layers(self, model) -> torch.nn.ModuleList:
        raise NotImplementedError

    def head(self, mlm, hidden):
        """MLM logits of hidden states (any leading shape)."""
        raise NotImplementedError

    def selected_logits(self, mlm, input_ids, attention_mask, select, last_layer_on_selected: bool):
        hidden = self.base(mlm)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mlm, hidden[select])

    def classifier_logits(self, clf, input_ids, token_type_ids=None, attention_mask=None):
        return clf(input_ids=input_ids, attention_mask=attention_mask).logits

    def new_head(self, clf) -> list:
        raise NotImplementedError


class _Bert(Arch):
    name, mlm_class, identity_out = "bert", BertForMaskedLM, None
    layer_re = re.compile(r"^(?P<pre>.*\.encoder\.layer\.)(?P<i>\d+)(?P<post>\..*)$")

    def make_config(self, size, vocab_size=None, **kw):
        return bert_config(size, vocab_size, **kw)

    def layers(self, model):
        return self.base(model).encoder.layer

    def head(self, mlm, hidden):
        return mlm.cls(hidden)

    def selected_logits(self, mlm, input_ids, attention_mask, select, last_layer_on_selected):
        if last_layer_on_selected:
            return mlm.cls(_last_layer_on_selected(mlm.bert, input_ids, attention_mask, select))
        return super().selected_logits(mlm, input_ids, attention_mask, select, False)

    def classifier_logits(self, clf, input_ids, token_type_ids=None, attention_mask=None):
        return _bert_classifier_logits(clf, input_ids, token_type_ids, attention_mask)

    def new_head(self, clf):
        return [clf.bert.pooler.dense, clf.classifier]


class _ModernBert(Arch):
    name = "modernbert"
    identity_out = ("attn.Wo", "mlp.Wo")      # the two residual branches' output projections
    layer_re = re.compile(r"^(?P<pre>(?:.*\.)?layers\.)(?P<i>\d+)(?P<post>\..*)$")

    @property
    def mlm_class(self):
        from transformers import ModernBertForMaskedLM
        return ModernBertForMaskedLM

    def make_config(self, size, vocab_size=None, **kw):
        return modernbert_config(size, vocab_size, **kw)

    def layers(self, model):
        return self.base(model).layers

    def head(self, mlm, hidden):
        return mlm.decoder(mlm.head(hidden))

    def new_head(self, clf):
        # The prediction head's transform (head.dense, head.norm) comes from the MLM checkpoint, as in stock
        # ModernBERT fine-tuning; only the classifier is new.
        return [clf.classifier]


ARCHS: dict[str, Arch] = {a.name: a for a in (_Bert(), _ModernBert())}
assert tuple(ARCHS) == ARCH_NAMES, "dwt_lib.config.ARCHS and the adapters here must name the same architectures"


def arch_of(x) -> Arch:
    """The adapter of an architecture name, a model (any head), a wrapped model or a config."""
    if isinstance(x, str):
        if x not in ARCHS:
            raise ValueError(f"unknown model.arch {x!r} (known: {', '.join(ARCHS)})")
        return ARCHS[x]
    cfg = getattr(getattr(x, "mlm", x), "config", x)
    return ARCHS["modernbert" if getattr(cfg, "model_type", "bert") == "modernbert" else "bert"]


def special_ids(tokenizer) -> dict:
    """The ids a model config needs from its tokenizer: ``pad``, ``cls``, ``sep``."""
    return {"pad": tokenizer.pad_token_id, "cls": tokenizer.cls_token_id, "sep": tokenizer.sep_token_id}


def model_kwargs(cfg) -> dict:
    """The :func:`build_model` keywords a profile's ``model`` section gives (besides size and vocabulary)."""
    m = cfg.model
    return dict(arch=m.arch, hidden_dropout_prob=m.hidden_dropout_prob,
                attention_probs_dropout_prob=m.attention_probs_dropout_prob,
                initializer_range=m.initializer_range,
                max_position_embeddings=(cfg.data.max_seq_length if m.arch == "modernbert"
                                         else max(512, cfg.data.max_seq_length)))
