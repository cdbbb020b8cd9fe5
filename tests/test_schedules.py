"""Soft-weight / temperature schedules: end points, shape, and rejected specs."""
import math

import pytest

from dwt_lib.core.errors import ScheduleError
from dwt_lib.config.schedules import make_schedule

T = 1000


def test_constant_and_bare_number():
    f = make_schedule({"kind": "constant", "value": 2.5})
    assert [f(s, T) for s in (0, 500, T)] == [2.5, 2.5, 2.5]
    assert make_schedule(3)(7, T) == 3.0


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_end_points_and_monotone(kind):
    f = make_schedule({"kind": kind, "start": 4.0, "end": 1.0})
    assert f(0, T) == pytest.approx(4.0)
    assert f(T, T) == pytest.approx(1.0)
    assert f(T // 2, T) == pytest.approx(2.5)            # both pass through the midpoint
    vals = [f(s, T) for s in range(0, T + 1, 10)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))
    up = make_schedule({"kind": kind, "start": 1.0, "end": 4.0})
    vals = [up(s, T) for s in range(0, T + 1, 10)]
    assert all(a <= b for a, b in zip(vals, vals[1:]))


def test_linear_and_cosine_values():
    lin = make_schedule({"kind": "linear", "start": 4, "end": 1})
    cos = make_schedule({"kind": "cosine", "start": 4, "end": 1})
    assert lin(250, T) == pytest.approx(3.25)
    assert cos(250, T) == pytest.approx(1 + 3 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_progress_is_clipped():
    f = make_schedule({"kind": "linear", "start": 4, "end": 1})
    assert f(-5, T) == pytest.approx(4.0)
    assert f(2 * T, T) == pytest.approx(1.0)


def test_step_values_at_fractions():
    f = make_schedule({"kind": "step", "values": [4, 2, 1], "boundaries": [0.25, 0.5]})
    assert f(0, 100) == 4 and f(24, 100) == 4
    assert f(25, 100) == 2 and f(49, 100) == 2
    assert f(50, 100) == 1 and f(100, 100) == 1


@pytest.mark.parametrize("spec, msg", [
    ({"kind": "exponential", "start": 1, "end": 2}, "unknown schedule kind 'exponential'"),
    ({"start": 1, "end": 2}, "expected a mapping with 'kind'"),
    ("linear", "expected a mapping with 'kind'"),
    ({"kind": "linear", "start": 1}, r"takes keys \['end', 'start'\], got \['start'\]"),
    ({"kind": "constant", "value": 1, "end": 2}, r"takes keys \['value'\], got \['end', 'value'\]"),
    ({"kind": "constant", "value": "one"}, "value must be a number, got 'one'"),
    ({"kind": "linear", "start": True, "end": 1}, "start must be a number"),
    ({"kind": "step", "values": [1, 2], "boundaries": [0.5, 0.7]}, "one more value than boundaries"),
    ({"kind": "step", "values": [1, 2, 3], "boundaries": [0.7, 0.5]}, "increasing fractions"),
    ({"kind": "step", "values": [1, 2], "boundaries": [1.5]}, "increasing fractions"),
    ({"kind": "step", "values": [1, 2], "boundaries": 0.5}, "must be lists"),
    ({"kind": "step", "values": [1, "x"], "boundaries": [0.5]}, "must be a number"),
])
def test_bad_specs_rejected(spec, msg):
    with pytest.raises(ScheduleError, match=msg):
        make_schedule(spec)


def test_nonpositive_total_rejected():
    with pytest.raises(ScheduleError, match="total_steps must be positive"):
        make_schedule({"kind": "linear", "start": 1, "end": 2})(0, 0)
