"""One real teacher prediction, for showing what temperature does to it (notebook 02).

When the profile's teacher run is finished, :func:`teacher_prediction` masks one word of a held-out
block (the validation split the run was evaluated on), runs the teacher on it and returns the logit
row at that position with the token strings. Before that run exists it returns random logits and says
so: the notebook runs at any profile without training anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

from dwt_lib.config.schema import Config
from dwt_lib.data import prepare
from dwt_lib.data.bytetok import readable
from dwt_lib.data.tokens import vocab_size
from dwt_lib.studies.identity import named_run


@dataclass(frozen=True)
class TeacherPrediction:
    logits: torch.Tensor              # the whole logit row at the masked position, sorted descending
    tokens: list = field(default_factory=list)   # token strings in that order (empty for random logits)
    source: str = ""                  # what this is, in words
    real: bool = False                # True: a trained teacher's prediction; False: random logits
    context: Optional[str] = None     # the held-out text around the position, with [MASK]
    answer: Optional[str] = None      # the token that was masked

    @property
    def kind(self) -> str:
        """A short label for a figure title."""
        return "a trained teacher's prediction" if self.real else "random logits"

    def describe(self, top: int = 10) -> str:
        """What this row is: its source and, for a real prediction, the text, the answer and the top tokens."""
        if not self.real:
            return self.source
        return (f"{self.source}\nheld-out text: {self.context!r}\nmasked token: {self.answer!r}; the teacher's top "
                f"{top}: {', '.join(self.tokens[:top])}")

    def label_ranks(self, ax, top: int = 8) -> None:
        """Put the token strings of the ``top`` ranks on the x axis of ``ax`` (ranks start at 1)."""
        if self.tokens:
            ticks = list(range(1, top + 1))
            ax.set_xticks(ticks, [f"{i} {t}" for i, t in zip(ticks, self.tokens)], rotation=60, fontsize=7)


def teacher_prediction(cfg: Config, role: str = "weak", block: int = 0, window: int = 12) -> TeacherPrediction:
    """The teacher ``role``'s prediction at one masked position of held-out block ``block`` (the first
    ordinary word-piece after the block's middle), if its run is finished; else random logits (seeded
    by ``pretrain.seed``) of the data's vocabulary size (261 for bytes). ``window`` word-pieces each side go into
    ``context``."""
    run = named_run(cfg, f"teacher-{role}")
    model_dir = run.dir / "model"
    if not (run.finished() and (model_dir / "config.json").exists()):
        g = torch.Generator().manual_seed(cfg.pretrain.seed)
        row = torch.sort(torch.randn(vocab_size(cfg.data), generator=g) * 3, descending=True).values
        return TeacherPrediction(row, [], f"random logits: no finished teacher-{role} run in this profile's "
                                          f"registry yet (notebook 03 trains it)")
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
    val = prepare.prepare_pretraining_data(cfg).validation   # through the module: a test patches it
    ids = val[block % len(val)].clone()
    special = set(tok.all_special_ids)
    pos = next(i for i in range(len(ids) // 2, len(ids))
               if int(ids[i]) not in special and not tok.convert_ids_to_tokens(int(ids[i])).startswith("##"))
    shown = readable if cfg.data.tokenizer == "bytes" else str      # a byte as ␣, ↵, \xNN; word pieces as they are
    answer = shown(tok.convert_ids_to_tokens(int(ids[pos])))
    ids[pos] = tok.mask_token_id
    with torch.no_grad():
        row = model(input_ids=ids[None], attention_mask=(ids != tok.pad_token_id).long()[None]).logits[0, pos].float()
    row, order = torch.sort(row, descending=True)
    lo, hi = max(0, pos - window), min(len(ids), pos + window + 1)
    context = tok.decode([int(i) for i in ids[lo:hi] if int(i) != tok.pad_token_id])
    return TeacherPrediction(row, [shown(t) for t in tok.convert_ids_to_tokens(order.tolist())],
                             f"the trained teacher-{role} run ({run.id}) on held-out block {block}, position {pos}",
                             True, context, answer)
