"""Parameter remapping teacher -> student (paper, appendix A.3, after Fang et al. 2020a).

Expansion: the teacher's layer stack is extended to the student's depth by repeating its
last layer. Remapping: student layer i takes the expanded teacher's layer i. Embeddings and
the MLM head (``cls.predictions.*``) are copied as they are. A 4-layer teacher into a
6-layer student: student layers 0-3 <- teacher layers 0-3, student layers 4 and 5 <- teacher
layer 3.

Widths must agree (hidden size, intermediate size, heads, vocabulary): this is depth
remapping only. Anything in the student with no counterpart in the teacher is left as it is
and reported as ``"random"``.

Both architectures follow the same rule; only the layer names differ (``bert.encoder.layer.{i}.`` /
``model.layers.{i}.``, from the adapter :func:`dwt_lib.models.arch_of`). ModernBERT's head (``head.*``,
``decoder.*``) and final norm (``model.final_norm``) are copied like BERT's ``cls.*``. Its layer 0 has no
``attn_norm`` (the embeddings end in a norm), so a student layer >= 1 filled from teacher layer 0 (a 1-layer
teacher) keeps its own ``attn_norm`` at initialisation (ones), reported as ``"random"``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from dwt_lib.models.encoder import arch_of

RANDOM = "random"
_LAYER = arch_of("bert").layer_re          # BERT's layer names (the default of source_key)
_CONFIG_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size")


@dataclass
class RemapReport:
    """Where every student tensor came from.

    ``sources`` maps each student parameter/buffer name (state-dict keys plus non-persistent
    buffers) to the teacher key it was copied from, or ``"random"`` when left untouched.
    ``tied`` maps a student name to the earlier name it shares storage with (e.g. the MLM
    decoder weight tied to the word embeddings); such a tensor is written and counted once.
    """
    sources: dict[str, str] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    copied_numel: int = 0
    random_numel: int = 0

    @property
    def copied(self) -> list[str]:
        """Student names that received a teacher tensor (tied aliases included)."""
        return [k for k, v in self.sources.items() if v != RANDOM]

    @property
    def random(self) -> list[str]:
        """Student names left at their initialisation."""
        return [k for k, v in self.sources.items() if v == RANDOM]

    def to_dict(self) -> dict:
        """JSON-able summary: the full mapping, the tied aliases, and element counts."""
        return {"sources": dict(self.sources), "tied": dict(self.tied),
                "copied_numel": self.copied_numel, "random_numel": self.random_numel,
                "n_copied": len(self.copied), "n_random": len(self.random)}

    def rows(self) -> list[tuple[str, str, str]]:
        """``(student name, source, note)`` rows, in the student's order."""
        return [(k, v, f"tied to {self.tied[k]}" if k in self.tied else "")
                for k, v in self.sources.items()]

    def table(self) -> str:
        """The report as a fixed-width text table (student name | source | note)."""
        rows = [("student", "source", "note")] + self.rows()
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"copied {len(self.copied)} tensors ({self.copied_numel:,} values), "
                     f"random {len(self.random)} ({self.random_numel:,} values)")
        return "\n".join(lines)

    def to_frame(self):
        """The report as a pandas DataFrame with columns student, source, note."""
        import pandas as pd
        return pd.DataFrame(self.rows(), columns=["student", "source", "note"])


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name, tied aliases and non-persistent buffers included."""
    out = dict(model.state_dict(keep_vars=True))
    for name, b in model.named_buffers(remove_duplicate=False):
        out.setdefault(name, b)
    return out


def _num_layers(names, model, layer_re: re.Pattern = _LAYER) -> int:
    cfg = getattr(model, "config", None)
    if cfg is not None and getattr(cfg, "num_hidden_layers", None) is not None:
        return int(cfg.num_hidden_layers)
    idx = [int(m["i"]) for m in map(layer_re.match, names) if m]
    return max(idx) + 1 if idx else 0


def _check_configs(teacher, student) -> None:
    tc, sc = getattr(teacher, "config", None), getattr(student, "config", None)
    if tc is None or sc is None:
        return
    ta, sa = arch_of(teacher).name, arch_of(student).name
    if ta != sa:
        raise ValueError(f"cannot remap: teacher is {ta} but student is {sa}; teacher and student must share "
                         f"model.arch")
    for k in _CONFIG_KEYS:
        a, b = getattr(tc, k, None), getattr(sc, k, None)
        if a != b:
            raise ValueError(f"cannot remap: teacher {k}={a} but student {k}={b}; remapping copies "
                             f"layers and needs the same {', '.join(_CONFIG_KEYS)}")


def source_key(student_key: str, teacher_layers: int, layer_re: re.Pattern = _LAYER) -> str:
    """The teacher name a student name maps to: layer i -> min(i, teacher_layers - 1), all other
    names unchanged. ``layer_re``: the architecture's layer names (default BERT's)."""
    m = layer_re.match(student_key)
    if not m or teacher_layers < 1:
        return student_key
    i = min(int(m["i"]), teacher_layers - 1)
    return f"{m['pre']}{i}{m['post']}"


@torch.no_grad()
def remap_parameters(teacher: torch.nn.Module, student: torch.nn.Module) -> RemapReport:
    """Initialise ``student`` in place from ``teacher`` (appendix A.3) and report every tensor.

    Copies embeddings, the MLM head and encoder layers, with the teacher's last layer repeated
    into the student's extra layers. Raises ``ValueError`` naming both values when hidden size,
    intermediate size, heads or vocabulary differ, or both shapes when any mapped tensor's
    shape differs. Tied student tensors (decoder weight = word embeddings) are written once.
    """
    _check_configs(teacher, student)
    layer_re = arch_of(student).layer_re
    t_all, s_all = _tensors(teacher), _tensors(student)
    n_t = _num_layers(t_all, teacher, layer_re)
    report = RemapReport()
    written: dict[tuple, str] = {}     # storage identity -> first student name written
    for name, dst in s_all.items():
        ident = (dst.data_ptr(), dst.dtype, tuple(dst.shape), dst.stride()) if dst.numel() else (name,)
        src_name = source_key(name, n_t, layer_re)
        src = t_all.get(src_name)
        if src is not None and tuple(src.shape) != tuple(dst.shape):
            raise ValueError(f"cannot remap {src_name} -> {name}: teacher shape {tuple(src.shape)} "
                             f"vs student shape {tuple(dst.shape)}")
        if ident in written:
            report.tied[name] = written[ident]
            report.sources[name] = src_name if src is not None else report.sources[written[ident]]
            continue
        written[ident] = name
        if src is None:
            report.sources[name] = RANDOM
            report.random_numel += dst.numel()
            continue
        dst.copy_(src)
        report.sources[name] = src_name
        report.copied_numel += dst.numel()
    return report
