"""Function-preserving growth: a shallower teacher grown into the deeper student, which at step 0
computes exactly the teacher's function (notebook 06; the paper's remapping, :mod:`dwt_lib.models.remap`,
does not: it repeats the last layer).

BERT here is post-LayerNorm (each layer ends in ``LayerNorm(x + f(x))``), so zeroing a new layer's
output projections does not make it the identity: the LayerNorm still rescales. Instead each new
layer is gated, as in masked structural growth (Yao et al., 2024)::

    h_out = h + m * (layer(h) - h)

with ``m`` ramping linearly from 0 at step 0 to 1 at ``ramp_steps`` (:func:`gate_value`); at m = 0 the
new layer is exactly the identity (``h + 0 == h`` in floating point), at m = 1 it is a plain layer, so
snapshots and the final model are ordinary ``BertForMaskedLM`` (the gate is a forward hook, not a
module: the state dict keeps BERT's names).

ModernBERT (``model.arch: modernbert``) is pre-LayerNorm (``x + f(norm(x))`` twice per layer), so there a new
layer whose two output projections (``attn.Wo``, ``mlp.Wo``) are zero *is* the identity: its new layers are
initialised that way and need no gate (``Gates`` then holds no layer and the ramp does nothing); every other
weight of a new layer keeps the student's initialisation, so the zeroed projections get gradients at once. The
new layers go on top of the teacher's (student layer i <- teacher layer i): the final norm and the head read the
residual stream, which identity layers leave as it is, and ModernBERT's layer 0 (no ``attn_norm``) stays layer 0.

Where the new layers go: just below the teacher's last layer. Student layers 0..n_t-2 take the
teacher's first n_t-1 layers, then the new (gated) layers, and the student's last layer is the
teacher's last layer, so the MLM head still reads the layer it was trained on (and
:class:`~dwt_lib.models.encoder.SparseMLM` keeps running the last layer on the masked rows only). Embeddings
and the MLM head are copied; widths must agree.
"""
from __future__ import annotations

import torch

from dwt_lib.models.encoder import arch_of
from dwt_lib.models.remap import _check_configs, _num_layers, _tensors

NEW = "new (gated)"
NEW_ZERO = "new (zero)"       # pre-LN: an output projection of a new layer, set to zero
NEW_PLAIN = "new"             # pre-LN: the rest of a new layer, at the student's initialisation


def layer_sources(teacher_layers: int, student_layers: int, on_top: bool = False) -> list:
    """For each student layer, the teacher layer it copies, or None for a new layer: the new layers just below
    the teacher's last one, or (``on_top``, pre-LN) above all of the teacher's layers."""
    if not 1 <= teacher_layers < student_layers:
        raise ValueError(f"growth needs 1 <= teacher layers < student layers, got {teacher_layers} and "
                         f"{student_layers}")
    n_new = student_layers - teacher_layers
    if on_top:
        return list(range(teacher_layers)) + [None] * n_new
    return list(range(teacher_layers - 1)) + [None] * n_new + [teacher_layers - 1]


def gate_value(step: int, ramp_steps: int) -> float:
    """m at ``step``: ``min(1, step / ramp_steps)``; 0 at step 0."""
    return min(1.0, step / max(1, ramp_steps))


def ramp_steps(ramp_fraction: float, total: int) -> int:
    return max(1, round(float(ramp_fraction) * total))


class Gates:
    """Forward hooks that gate the new layers of a grown model: ``h + m * (layer(h) - h)``.
    ``set(m)`` changes m for every gated layer; ``remove()`` takes the hooks off."""

    def __init__(self, mlm, layers: list[int]):
        self.m = 0.0
        self.layers = list(layers)
        stack = arch_of(mlm).layers(mlm)
        self.handles = [stack[i].register_forward_hook(self._hook, with_kwargs=True) for i in self.layers]

    def _hook(self, module, args, kwargs, out):
        if self.m == 1.0:
            return out
        h = args[0] if args else kwargs["hidden_states"]
        y = out[0] if isinstance(out, tuple) else out
        g = h + self.m * (y - h)
        return (g,) + tuple(out[1:]) if isinstance(out, tuple) else g

    def set(self, m: float) -> None:
        self.m = float(m)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@torch.no_grad()
def grow(teacher, student) -> tuple[Gates, dict]:
    """Initialise ``student`` (a masked LM of either architecture) in place from the shallower ``teacher`` of the
    same architecture, with its new layers the identity: gated at m = 0 (BERT) or with zero output projections
    (ModernBERT). Returns the gates and a report: ``sources`` (student name -> teacher name, ``"new (gated)"``,
    ``"new (zero)"`` for a zeroed projection, or ``"new"`` for a new layer's other weights), ``new_layers`` and
    ``layer_sources``. Raises ``ValueError`` when architectures, widths or vocabularies differ."""
    _check_configs(teacher, student)
    arch = arch_of(student)
    t_all, s_all = _tensors(teacher), _tensors(student)
    pre_ln = arch.identity_out is not None
    src = layer_sources(_num_layers(t_all, teacher, arch.layer_re), _num_layers(s_all, student, arch.layer_re),
                        on_top=pre_ln)
    zero = tuple(f".{p}." for p in arch.identity_out or ())
    sources, done = {}, set()
    for name, dst in s_all.items():
        m = arch.layer_re.match(name)
        if m and src[int(m["i"])] is None:
            if not pre_ln:
                sources[name] = NEW
            elif m["post"].startswith(zero):
                dst.zero_()                   # the residual branch adds 0: the layer is the identity
                sources[name] = NEW_ZERO
            else:
                sources[name] = NEW_PLAIN
            continue
        tname = f"{m['pre']}{src[int(m['i'])]}{m['post']}" if m else name
        t = t_all.get(tname)
        if t is None:
            sources[name] = NEW if m else "random"
            continue
        if tuple(t.shape) != tuple(dst.shape):
            raise ValueError(f"cannot grow {tname} -> {name}: shapes {tuple(t.shape)} vs {tuple(dst.shape)}")
        ident = (dst.data_ptr(), tuple(dst.shape)) if dst.numel() else (name,)
        if ident not in done:                # a tied tensor (decoder = word embeddings) is written once
            dst.copy_(t)
            done.add(ident)
        sources[name] = tname
    new = [i for i, s in enumerate(src) if s is None]
    gated = [] if pre_ln else new
    return Gates(student, gated), {"sources": sources, "new_layers": new, "gated_layers": gated,
                                   "layer_sources": [s if s is not None else "new" for s in src]}


@torch.no_grad()
def function_gap(teacher, student, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """Largest absolute difference between the two models' MLM logits on a batch (eval mode, then
    restored): 0 up to float rounding when the student computes the teacher's function."""
    modes = teacher.training, student.training
    teacher.eval()
    student.eval()
    try:
        a = teacher(input_ids=input_ids, attention_mask=attention_mask).logits
        b = student(input_ids=input_ids, attention_mask=attention_mask).logits
    finally:
        teacher.train(modes[0])
        student.train(modes[1])
    return float((a.float() - b.float()).abs().max())
