"""Schedules for the soft-loss weight a_s and the temperature tau.

``make_schedule(spec)`` turns a spec from YAML into a pure function ``f(step, total_steps)``.
Pure in the step, so a run resumed at step k sees exactly the value an uninterrupted run
saw at step k. Progress is ``t = step / total_steps`` clipped to [0, 1].

Kinds:

- ``{kind: constant, value: v}``
- ``{kind: linear, start: a, end: b}``: a + (b - a) t
- ``{kind: cosine, start: a, end: b}``: b + (a - b)(1 + cos(pi t)) / 2
- ``{kind: step, values: [v0, v1, ...], boundaries: [f1, ...]}``: v_i on [f_i, f_{i+1}),
  boundaries are increasing fractions of training in (0, 1), one fewer than values.
- ``{kind: linear_until, start: a, end: b, until: u}``: a + (b - a) min(t / u, 1), i.e. linear
  over the first fraction u of training, then b. Knowledge Inheritance (Qin et al., 2022) decays
  the teacher's weight as ``max(0, 1 - step / T_distil)``: ``{start: 1, end: 0, until: T_distil / total}``.
"""
from __future__ import annotations

import math
from typing import Callable

from dwt_lib.core.errors import ConfigError, ScheduleError

Schedule = Callable[[int, int], float]


_KEYS = {
    "constant": {"value"},
    "linear": {"start", "end"},
    "cosine": {"start", "end"},
    "step": {"values", "boundaries"},
    "linear_until": {"start", "end", "until"},
}

KINDS = tuple(_KEYS)


def _num(spec: dict, k: str) -> float:
    v = spec[k]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ScheduleError(f"{k} must be a number, got {v!r}")
    return float(v)


def make_schedule(spec: dict | float | int) -> Schedule:
    """Build ``f(step, total_steps) -> float`` from a spec (a bare number means constant)."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        spec = {"kind": "constant", "value": float(spec)}
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ScheduleError(f"expected a mapping with 'kind' (one of {', '.join(_KEYS)}), got {spec!r}")
    kind = spec["kind"]
    if kind not in _KEYS:
        raise ScheduleError(f"unknown schedule kind {kind!r} (one of {', '.join(_KEYS)})")
    keys = set(spec) - {"kind"}
    if keys != _KEYS[kind]:
        raise ScheduleError(f"schedule {kind!r} takes keys {sorted(_KEYS[kind])}, got {sorted(keys)}")

    if kind == "constant":
        v = _num(spec, "value")
        return lambda step, total: v
    if kind == "linear_until":
        a, b, u = _num(spec, "start"), _num(spec, "end"), _num(spec, "until")
        if not 0 < u <= 1:
            raise ScheduleError(f"linear_until: until must be a fraction of training in (0, 1], got {u!r}")
        return lambda step, total: a + (b - a) * min(_progress(step, total) / u, 1.0)
    if kind in ("linear", "cosine"):
        a, b = _num(spec, "start"), _num(spec, "end")
        if kind == "linear":
            return lambda step, total: a + (b - a) * _progress(step, total)
        return lambda step, total: b + (a - b) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, total)))

    values, bounds = spec["values"], spec["boundaries"]
    if not isinstance(values, (list, tuple)) or not isinstance(bounds, (list, tuple)):
        raise ScheduleError("step: values and boundaries must be lists")
    if len(values) != len(bounds) + 1:
        raise ScheduleError(f"step: need one more value than boundaries, got {len(values)} values "
                            f"and {len(bounds)} boundaries")
    vals = [_num({"v": v}, "v") for v in values]
    bnds = [_num({"b": b}, "b") for b in bounds]
    if any(not 0 < b < 1 for b in bnds) or any(x >= y for x, y in zip(bnds, bnds[1:])):
        raise ScheduleError(f"step: boundaries must be increasing fractions in (0, 1), got {list(bounds)}")

    def step_fn(step: int, total: int) -> float:
        t = _progress(step, total)
        return vals[sum(t >= b for b in bnds)]
    return step_fn


def _progress(step: int, total: int) -> float:
    if total <= 0:
        raise ScheduleError(f"total_steps must be positive, got {total}")
    return min(max(step / total, 0.0), 1.0)


def check_schedule(spec: dict, src: str, key: str, positive: bool) -> None:
    """A schedule in a profile (``src``, at ``key``) that builds and gives finite values (positive ones where
    ``positive``); else one :class:`ConfigError` naming the file and key."""
    try:
        f = make_schedule(spec)
    except ScheduleError as e:
        raise ConfigError(f"{src}: {key}: {e}") from None
    for k, v in spec.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{src}: {key}.{k}: expected a finite number, got {v!r}")
    for s in (0, 1, 50, 99, 100):
        v = f(s, 100)
        if not math.isfinite(v) or (positive and v <= 0) or v < 0:
            what = "a schedule of positive values" if positive else "a schedule of values >= 0"
            raise ConfigError(f"{src}: {key}: expected {what}, got {spec!r}")
