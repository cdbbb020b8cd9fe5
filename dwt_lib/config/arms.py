"""The arms of notebook 06 ("beyond the paper"): what the paper suggests or never ran, as profile data.

``studies.beyond`` maps an arm name to its settings; each arm is one pre-training run of the student,
``beyond-<arm>``, compared with the runs it names in ``against``. Unset keys take the profile's
(``distill.alpha_soft``, ``distill.temperature``), the teacher as the target and random initialisation::

    aware: {question: soft_weight, teacher: weak, against: [soft-normal],
            alpha_soft: {kind: teacher_aware, schedule: {kind: constant, value: 1.0},
                         floor: 0.0, decay_fraction: 0.1, ema: 0.98}}
    smoothed: {question: teacher_free, target: {kind: smoothed, epsilon: 0.1}, against: [dwt-weak, student]}
    grow: {question: growth, teacher: weak, init: {kind: grow, ramp_fraction: 0.1}, against: [remap-weak]}

This module holds them as plain data and rules: the keys and kinds an arm may use, their validation, and the
run names of every arm (the paper's three studies and notebook 06's). What the training loop needs for them is
:mod:`dwt_lib.models.targets` (soft weight, smoothed target) and :mod:`dwt_lib.models.growth`; the study itself
(fine-tuning, spreads, summaries) is :mod:`dwt_lib.studies.beyond`.
"""
from __future__ import annotations

import re
from typing import Any, Optional

from dwt_lib.config.schedules import KINDS as SCHEDULE_KINDS
from dwt_lib.config.schedules import check_schedule
from dwt_lib.core.errors import ConfigError, UnknownNameError

#: The questions of notebook 06, in order: an arm's ``question`` is one of these.
QUESTIONS = ("soft_weight", "temperature", "teacher_free", "growth")
ARM_KEYS = ("question", "teacher", "alpha_soft", "temperature", "target", "init", "against")
TARGET_KINDS = ("teacher", "smoothed")
INIT_KINDS = ("random", "remap", "grow")
ALPHA_KINDS = SCHEDULE_KINDS + ("teacher_aware",)
_AWARE_KEYS = {"schedule", "floor", "decay_fraction", "ema"}
PREFIX = "beyond-"
#: The control run with no pre-training: the student's shape at its random initialisation (``pretrain.max_steps: 0``),
#: fine-tuned like every arm, so the tables show what pre-training adds.
NO_PRETRAINING = "random-init"
SEED_LIMIT = 2**32          # NumPy's seeds are 32-bit; torch's wrap larger ones silently


def run_name(arm: str) -> str:
    """The run name of an arm: ``beyond-<arm>``."""
    return PREFIX + arm


# ----------------------------------------------------------------------------- the profile's arms

def target_of(spec: dict) -> dict:
    return dict(spec.get("target") or {"kind": "teacher"})


def init_of(spec: dict) -> dict:
    return dict(spec.get("init") or {"kind": "random"})


def check_arms(cfg, src: str) -> None:
    """Every arm of ``studies.beyond``: known keys and kinds, a teacher of the profile where the target
    is the teacher, ``against`` naming runs of the profile. One :class:`~dwt_lib.config.ConfigError`
    naming the file, the key path and what is allowed."""

    def fail(key: str, msg: str):
        raise ConfigError(f"{src}: studies.beyond.{key}: {msg}")

    known_runs = base_arm_names(cfg)
    for arm, spec in cfg.studies.beyond.items():
        if not isinstance(spec, dict):
            fail(arm, f"expected a mapping of {', '.join(ARM_KEYS)}, got {spec!r}")
        extra = sorted(set(spec) - set(ARM_KEYS))
        if extra:
            fail(f"{arm}.{extra[0]}", f"unknown key (allowed: {', '.join(ARM_KEYS)})")
        if spec.get("question") not in QUESTIONS:
            fail(f"{arm}.question", f"expected one of {', '.join(QUESTIONS)}, got {spec.get('question')!r}")
        target, init = target_of(spec), init_of(spec)
        if target.get("kind") not in TARGET_KINDS:
            fail(f"{arm}.target.kind", f"unknown kind {target.get('kind')!r} (known: {', '.join(TARGET_KINDS)})")
        if target["kind"] == "smoothed":
            if set(target) != {"kind", "epsilon"}:
                fail(f"{arm}.target", f"smoothed takes keys kind, epsilon, got {sorted(target)}")
            if not _number(target["epsilon"]) or not 0 < target["epsilon"] < 1:
                fail(f"{arm}.target.epsilon", f"expected a fraction in (0, 1), got {target['epsilon']!r}")
            if spec.get("teacher") is not None:
                fail(f"{arm}.teacher", "a smoothed target needs no teacher: leave teacher out (or null)")
            if cfg.distill.soft_loss_positions != "masked":
                fail(f"{arm}.target", "a smoothed target needs labels, so distill.soft_loss_positions: masked")
        elif set(target) != {"kind"}:
            fail(f"{arm}.target", f"teacher takes no settings, got {sorted(target)}")
        elif spec.get("teacher") not in cfg.model.teachers:
            fail(f"{arm}.teacher", f"expected a teacher role of model.teachers ({', '.join(cfg.model.teachers)}), "
                                   f"got {spec.get('teacher')!r}")
        if init.get("kind") not in INIT_KINDS:
            fail(f"{arm}.init.kind", f"unknown kind {init.get('kind')!r} (known: {', '.join(INIT_KINDS)})")
        if init["kind"] != "random" and target["kind"] != "teacher":
            fail(f"{arm}.init", f"init {init['kind']} copies a teacher: it needs target kind teacher")
        if init["kind"] == "grow":
            _check_grow(cfg, arm, spec, init, fail)
        elif set(init) != {"kind"}:
            fail(f"{arm}.init", f"{init['kind']} takes no settings, got {sorted(init)}")
        _check_alpha(spec.get("alpha_soft"), f"{arm}.alpha_soft", target, fail, src)
        if spec.get("temperature") is not None:
            if not isinstance(spec["temperature"], dict):
                fail(f"{arm}.temperature", f"expected a schedule mapping with a kind ({', '.join(SCHEDULE_KINDS)}), "
                                           f"e.g. {{kind: constant, value: 2.0}}, got {spec['temperature']!r}")
            check_schedule(spec["temperature"], src, f"studies.beyond.{arm}.temperature", positive=True)
        against = spec.get("against") or []
        if not isinstance(against, list) or not against:
            fail(f"{arm}.against", "expected a non-empty list of run names to compare with")
        for name in against:
            if name not in known_runs and not (name.startswith(PREFIX) and name[len(PREFIX):] in cfg.studies.beyond):
                fail(f"{arm}.against", f"unknown run {name!r} (runs of this profile: {', '.join(known_runs)})")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_grow(cfg, arm, spec, init, fail) -> None:
    if set(init) != {"kind", "ramp_fraction"}:
        fail(f"{arm}.init", f"grow takes keys kind, ramp_fraction, got {sorted(init)}")
    r = init["ramp_fraction"]
    first = min(cfg.pretrain.snapshot_fractions)
    if not _number(r) or not 0 < r <= first:
        fail(f"{arm}.init.ramp_fraction", f"expected a fraction in (0, {first:g}] (at most the first snapshot "
             f"fraction, so every snapshot is a plain BERT with its new layers fully on), got {r!r}")
    # Widths are checked when the run starts (growth.grow, like remapping): a profile whose student is wider
    # than its teachers stays valid for every other arm.


def _check_alpha(spec, key, target, fail, src) -> None:
    if spec is None:
        return
    if not isinstance(spec, dict) or spec.get("kind") not in ALPHA_KINDS:
        kind = spec.get("kind") if isinstance(spec, dict) else spec
        fail(key, f"unknown kind {kind!r} (known: {', '.join(ALPHA_KINDS)})")
    if spec["kind"] != "teacher_aware":
        check_schedule(spec, src, f"studies.beyond.{key}", positive=False)
        return
    if set(spec) - {"kind"} != _AWARE_KEYS:
        fail(key, f"teacher_aware takes keys {', '.join(sorted(_AWARE_KEYS))}, got {sorted(set(spec) - {'kind'})}")
    if target["kind"] != "teacher":
        fail(key, "teacher_aware compares the student with the teacher: it needs target kind teacher")
    if not isinstance(spec["schedule"], dict) or spec["schedule"].get("kind") == "teacher_aware":
        fail(key + ".schedule", "expected a schedule (" + ", ".join(SCHEDULE_KINDS) + "), got teacher_aware")
    if not _number(spec["floor"]) or spec["floor"] < 0:
        fail(key + ".floor", f"expected a number >= 0, got {spec['floor']!r}")
    if not _number(spec["decay_fraction"]) or not 0 < spec["decay_fraction"] <= 1:
        fail(key + ".decay_fraction", f"expected a fraction of training in (0, 1], got {spec['decay_fraction']!r}")
    if not _number(spec["ema"]) or not 0 <= spec["ema"] < 1:
        fail(key + ".ema", f"expected a decay in [0, 1), got {spec['ema']!r}")


def run_settings(cfg, arm: str) -> dict:
    """Keyword arguments of :func:`dwt_lib.studies.identity.pretrain_run` for an arm (the teacher as a role)."""
    spec = cfg.studies.beyond[arm]
    target, init = target_of(spec), init_of(spec)
    out = {"teacher_role": spec.get("teacher") if target["kind"] == "teacher" else None,
           "init": init["kind"], "alpha_soft": spec.get("alpha_soft"), "temperature": spec.get("temperature")}
    if target["kind"] != "teacher":
        out["target"] = target
    if init["kind"] == "grow":
        out["grow"] = {"ramp_fraction": init["ramp_fraction"]}
    return out


# ----------------------------------------------------------------------------- run names

def seed_ok(seed: Any) -> bool:
    """An integer seed in [0, 2^32)."""
    return not isinstance(seed, bool) and isinstance(seed, int) and 0 <= seed < SEED_LIMIT


SEED_MARK = ":s"


def split_seed(name: str) -> tuple[str, Optional[int]]:
    """``"student:s43"`` -> ``("student", 43)``; a name without a seed -> ``(name, None)``. Only ASCII digits
    make a seed (``str.isdigit`` also accepts ``²``, which ``int`` refuses); a seed outside [0, 2^32) is an
    :class:`~dwt_lib.core.errors.UnknownNameError` naming the range."""
    base, mark, seed = name.rpartition(SEED_MARK)
    if not (mark and base and re.fullmatch(r"[0-9]+", seed)):
        return name, None
    if int(seed) >= SEED_LIMIT:
        raise UnknownNameError(f"pre-training seed {seed} in run name {name!r} is out of range", "--run",
                               f"use a seed in [0, 2^32), e.g. {base}{SEED_MARK}43")
    return base, int(seed)


def base_arm_names(cfg) -> list[str]:
    """Every arm of the paper's three studies (one name each, at ``pretrain.seed``), teachers first."""
    roles = list(cfg.model.teachers)
    return ([f"teacher-{r}" for r in roles] + ["student", NO_PRETRAINING]
            + [f"dwt-{r}" for r in cfg.studies.teacher_quality]
            + [f"soft-{v}" for v in cfg.studies.soft_weight]
            + [f"remap-{cfg.studies.param_remap_teacher}"])


def arm_names(cfg) -> list[str]:
    """Every arm of the studies, the paper's three and notebook 06's (``beyond-<arm>``), teachers first."""
    return base_arm_names(cfg) + [run_name(a) for a in cfg.studies.beyond]
