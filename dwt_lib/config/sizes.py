"""The model sizes a profile names, as plain data: the presets (the paper's student 6L/768H and its
teachers, and scaled CPU sizes), a profile's own sizes (``model.sizes``) and the encoder families (``model.arch``).
Everything here is ``BertConfig`` keyword arguments; :mod:`dwt_lib.models.encoder` builds the models."""
from __future__ import annotations

from dwt_lib.core.errors import SizeError

#: ``model.arch``: the encoder a profile trains (plain data here; :mod:`dwt_lib.models` has one adapter per name).
ARCHS = ("bert", "modernbert")

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


#: Keys of a size in a profile's ``model.sizes`` -> ``BertConfig`` names. ``intermediate``
#: defaults to 4 x ``hidden`` (BERT's ratio).
SIZE_KEYS = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
             "intermediate": "intermediate_size"}


def size_from_spec(spec) -> dict:
    """``BertConfig`` keywords of a profile-defined size ``{layers, hidden, heads[, intermediate]}``.

    Raises :class:`SizeError` naming the key for an unknown or missing key, a value that is not a
    positive integer, or a hidden size that the heads do not divide.
    """
    if not isinstance(spec, dict):
        raise SizeError("", f"expected a mapping with keys {', '.join(SIZE_KEYS)}, got {spec!r}")
    unknown = sorted(set(spec) - set(SIZE_KEYS))
    if unknown:
        raise SizeError(unknown[0], f"unknown key (allowed: {', '.join(SIZE_KEYS)})")
    for k in ("layers", "hidden", "heads"):
        if k not in spec:
            raise SizeError(k, "missing (a size needs layers, hidden and heads; intermediate defaults "
                               "to 4 x hidden)")
    for k, v in spec.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SizeError(k, f"expected an integer >= 1, got {v!r}")
    if spec["hidden"] % spec["heads"]:
        raise SizeError("heads", f"hidden {spec['hidden']} is not divisible by {spec['heads']} heads "
                                 f"(each head gets hidden / heads dimensions)")
    out = {SIZE_KEYS[k]: v for k, v in spec.items()}
    out.setdefault("intermediate_size", 4 * spec["hidden"])
    return out


def resolve_size(name: str, sizes: dict | None = None) -> dict:
    """``BertConfig`` keywords of a size name: the profile's ``sizes`` first, then the presets."""
    if sizes and name in sizes:
        return size_from_spec(sizes[name])
    if name in SIZES:
        return dict(SIZES[name])
    defined = f"profile sizes: {', '.join(sorted(sizes))}; " if sizes else ""
    raise KeyError(f"unknown model size {name!r} ({defined}presets: {', '.join(sorted(SIZES))})")
