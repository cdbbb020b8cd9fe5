"""What the training loop needs for notebook 06's arms (:mod:`dwt_lib.config.arms` holds their settings): the
teacher-aware soft weight (:class:`TeacherAwareWeight`) and the label-smoothed target that stands in for a
teacher (:class:`SmoothedTarget`)."""
from __future__ import annotations

from typing import Optional

import torch

from dwt_lib.config.schedules import make_schedule


# ----------------------------------------------------------------------------- teacher-aware soft weight

def aware_weight(step: int, total: int, spec: dict, crossed_at: Optional[int], schedule=None) -> float:
    """a_s at ``step`` for ``{kind: teacher_aware, schedule, floor, decay_fraction}``: the schedule while
    the student is behind (``crossed_at`` None, or not reached yet); from ``crossed_at`` on, linear from
    the schedule's value to ``floor`` over ``decay_steps = max(1, round(decay_fraction * total))``, then
    ``floor``. A pure function of the step and the logged crossing step. ``schedule``: ``spec["schedule"]``
    already built (:class:`TeacherAwareWeight` builds it once, not at every step)."""
    base = (schedule or make_schedule(spec["schedule"]))(step, total)
    if crossed_at is None or step < crossed_at:
        return base
    k = min((step - crossed_at) / decay_steps(spec, total), 1.0)
    return base + (float(spec["floor"]) - base) * k


def decay_steps(spec: dict, total: int) -> int:
    return max(1, round(float(spec["decay_fraction"]) * total))


class TeacherAwareWeight:
    """The soft weight of a ``teacher_aware`` spec, with the state it depends on.

    ``state`` holds running means (EMA, decay ``ema``; the first value starts each) of the student's and
    the teacher's hard loss on the same masked tokens, and ``crossed_at``: the first step after the one at
    which the student's EMA fell below the teacher's (latched: the weight never climbs back). The weight
    of step ``s`` is :func:`aware_weight` of the state after steps ``< s``; ``update`` adds step ``s``'s
    losses. ``state`` is plain floats, saved in every checkpoint, so a resumed run continues identically.
    """

    def __init__(self, spec: dict, total: int):
        self.spec, self.total = dict(spec), total
        self.schedule = make_schedule(spec["schedule"])
        self.state = {"ema_student": None, "ema_teacher": None, "crossed_at": None}

    def __call__(self, step: int, total: Optional[int] = None) -> float:
        return aware_weight(step, total or self.total, self.spec, self.state["crossed_at"], self.schedule)

    def update(self, step: int, student_hard: float, teacher_hard: float) -> None:
        b, st = float(self.spec["ema"]), self.state
        for k, x in (("ema_student", float(student_hard)), ("ema_teacher", float(teacher_hard))):
            st[k] = x if st[k] is None else b * st[k] + (1 - b) * x
        if st["crossed_at"] is None and st["ema_student"] < st["ema_teacher"]:
            st["crossed_at"] = step + 1

    def log(self) -> dict:
        return {"ema_student": self.state["ema_student"], "ema_teacher": self.state["ema_teacher"]}


def soft_weight(spec: dict, total: int):
    """a_s as ``f(step, total)``: a :class:`TeacherAwareWeight` for ``teacher_aware``, else the schedule."""
    return TeacherAwareWeight(spec, total) if spec.get("kind") == "teacher_aware" else make_schedule(dict(spec))


# ----------------------------------------------------------------------------- label-smoothed target

class SmoothedTarget:
    """A teacher-free target (Yuan et al., 2020, "Tf-KD"): for a masked token with label y, the
    distribution ``(1 - epsilon) * onehot(y) + epsilon / V``, given as logits (its log), so the soft loss
    is the same KL as towards a teacher: at tau = 1 ``KL(q || p_student)``; at tau the softened
    ``softmax(log q / tau)``. Called with the labels of the selected positions, where a teacher is
    called with the inputs."""

    uses_labels = True

    def __init__(self, vocab_size: int, epsilon: float):
        self.vocab_size, self.epsilon = int(vocab_size), float(epsilon)

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        if bool((y < 0).any()):
            raise ValueError("a smoothed target needs a label at every selected position (soft loss on masked "
                             "tokens only)")
        q = torch.full((len(y), self.vocab_size), self.epsilon / self.vocab_size, device=y.device)
        q[torch.arange(len(y), device=y.device), y] += 1.0 - self.epsilon
        return q.log()
