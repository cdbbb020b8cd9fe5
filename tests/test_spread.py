"""Pre-training seeds as runs, the two spreads and the resolution rule, and the paper's premise."""
import json
import math

import numpy as np
import pytest

from dwt_lib.notebook import plots
from dwt_lib.studies import spread, identity as studies
from dwt_lib.core.errors import ConfigError
from dwt_lib.config.load import load_params
from dwt_lib.studies.plan import make_plan
from dwt_lib.studies.premise import premise, premise_check
from dwt_lib.studies.text import prose_words

SEEDS = {"studies.pretrain_seeds": {"student": [42, 43], "dwt-weak": [42, 43]}}


# ----------------------------------------------------------------------------- the rule

def test_resolved_only_against_the_larger_spread():
    ft = ([70.0, 70.2, 69.8], [70.0])           # (per fine-tuning seed, per pre-training seed)
    # 1.0 point apart, fine-tuning SE ~0.16: resolved against fine-tuning seeds alone ...
    assert spread.resolved(1.0, spread.se_mean_diff([71.0, 71.2, 70.8], ft[0]), 0.1)
    # ... but pre-training seeds that disagree by 2 points leave it unresolved
    a = ([71.0, 71.2, 70.8], [70.0, 72.0])
    b = ([70.0, 70.2, 69.8], [69.0, 71.0])
    c = spread.compare(a, b)
    assert c["diff"] == pytest.approx(1.0) and c["se_finetune"] < 0.5 < c["se_pretrain"]
    assert not c["resolved"] and "pre-training" in c["verdict"] and "not resolved" in c["verdict"]
    # pre-training seeds that agree: resolved
    c = spread.compare(([71.0, 71.2, 70.8], [71.0, 71.01]), ([70.0, 70.2, 69.8], [70.0, 70.02]))
    assert c["resolved"] and c["verdict"].endswith(": resolved")


def test_one_pretraining_seed_never_resolves_and_one_side_borrows():
    c = spread.compare(([75.0, 75.1, 74.9], [75.0]), ([70.0, 70.1, 69.9], [70.0]))
    assert math.isnan(c["se_pretrain"]) and c["se_pretrain_how"] == "unknown"
    assert not c["resolved"] and "unmeasured" in c["verdict"]
    # only one arm has two seeds: its variance stands in for the other's
    se, how = spread.se_pretrain_diff([70.0, 72.0], [71.0])
    assert how == "borrowed" and se == pytest.approx(math.sqrt(2.0 / 2 + 2.0 / 1))
    assert spread.resolved(10.0, 0.1, se) and not spread.resolved(1.0, 0.1, se)


def test_seed_matrix_averages_tasks_per_seed_pair():
    rec = lambda task, scores: {"task": task, "scores": scores, "pretrain_seeds": [42, 42, 43, 43],
                                "finetune_seeds": [1, 2, 1, 2]}
    pts, m = spread.seed_matrix([rec("a", [1.0, 2.0, 3.0, 4.0]), rec("b", [3.0, 4.0, 5.0, 6.0])])
    assert pts == [42, 43] and m.tolist() == [[2.0, 3.0], [4.0, 5.0]]


# ----------------------------------------------------------------------------- runs as data

def test_pretrain_seeds_are_runs_of_their_own():
    cfg = load_params("smoke", SEEDS)
    names = studies.all_run_names(cfg)
    assert names.index("student:s43") == names.index("student") + 1 and "dwt-weak:s43" in names
    s42, s43 = studies.named_run(cfg, "student"), studies.named_run(cfg, "student:s43")
    assert s42.id != s43.id and s43.key["pretrain"]["seed"] == 43 and s42.key["pretrain"]["seed"] == 42
    assert studies.named_run(cfg, "student:s42").id == s42.id
    # the DWT seed run keeps the profile's teacher; soft-normal (= dwt-weak) inherits dwt-weak's seeds
    assert studies.named_run(cfg, "dwt-weak:s43").key["teacher"] == studies.named_run(cfg, "dwt-weak").key["teacher"]
    assert studies.seed_runs(cfg, "soft-normal") == ["soft-normal", "soft-normal:s43"]
    assert studies.named_run(cfg, "soft-normal:s43").id == studies.named_run(cfg, "dwt-weak:s43").id
    assert studies.run_config(cfg, "dwt-weak:s43").pretrain.seed == 43
    assert studies.teacher_name(cfg, "dwt-weak:s43") == "teacher-weak"
    rows = {r["run"]: r for r in make_plan(cfg)["rows"]}
    assert rows["soft-normal:s43"]["same_as"] == "dwt-weak:s43" and rows["student:s43"]["steps"] > 0
    assert studies.seed_runs(load_params("smoke", {"studies.pretrain_seeds": {}}), "student") == ["student"]


def test_pretrain_seeds_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"studies\.pretrain_seeds\.studnet: expected a run name"):
        load_params("smoke", {"studies.pretrain_seeds": {"studnet": [1, 2]}})
    with pytest.raises(ConfigError, match=r"studies\.pretrain_seeds\.student: expected a non-empty list"):
        load_params("smoke", {"studies.pretrain_seeds": {"student": 43}})


# ----------------------------------------------------------------------------- the premise

def _res(student, weak, very, extremely, acc=0.25):
    """A teacher-quality result with given final losses; ``student`` a list over pre-training seeds."""
    runs = {"student": {"mlm_loss": float(np.mean(student)), "mlm_accuracy": acc,
                        "mlm_loss_spread": spread.seed_spread(student), "pretrain_seeds": list(range(len(student)))}}
    for role, loss in (("weak", weak), ("very_weak", very), ("extremely_weak", extremely)):
        runs[f"teacher-{role}"] = {"mlm_loss": loss}
    curves = {"student": [{"tokens": 1e6, "mlm_loss": 7.0, "mlm_accuracy": 0.05},
                          {"tokens": 2e6, "mlm_loss": student[0], "mlm_accuracy": acc}],
              "student:s43": [{"tokens": 2e6, "mlm_loss": student[-1], "mlm_accuracy": acc}],
              "teacher-weak": [{"tokens": 2e6, "mlm_loss": weak, "mlm_accuracy": 0.2}]}
    return {"runs": runs, "roles": ["weak", "very_weak", "extremely_weak"], "curves": curves,
            "size_ratio": {"weak": 0.78, "very_weak": 0.57, "extremely_weak": 0.46}, "provenance": {"profile": "t"}}


def test_premise_holds_with_clear_gaps():
    p = premise(_res([4.00, 4.01], 4.10, 4.20, 4.30))
    assert p["holds"] and p["ordered"] and [round(g["gap"], 3) for g in p["gaps"]] == [0.095, 0.1, 0.1]
    text = premise_check(_res([4.00, 4.01], 4.10, 4.20, 4.30))
    assert "The premise holds" in text and "| standalone student | 4.005 ± 0.007 (2 seeds) |" in text
    assert "25.0%" in text and "at or above" in text
    assert "extrapolated" not in text and prose_words(text) <= 80


@pytest.mark.parametrize("student, weak, very, extremely, why", [
    ([6.32, 6.33], 6.284, 6.295, 6.309, "| weak teacher | 6.284 | -0.041 (better than the standalone student) |"),
    ([4.00, 4.01], 4.04, 4.20, 4.30, "| weak teacher | 4.040 | +0.035 (short) |"),                      # gap < 0.05
    ([4.00, 4.20], 4.25, 4.50, 4.80, "| weak teacher | 4.250 | +0.150 (short) |"),                      # gap < 2 x spread
    ([4.00], 4.10, 4.20, 4.30, "with one pre-training seed the gaps cannot be told from seed noise"),
])
def test_premise_fails_and_says_where(student, weak, very, extremely, why):
    res = _res(student, weak, very, extremely, acc=0.12)
    assert not premise(res)["holds"]
    text = premise_check(res)
    assert "The premise does not hold" in text and why in text and "below the 20% aim" in text, text
    assert prose_words(text) <= 80, text


def test_premise_figure_from_result_file(tmp_path):
    p = tmp_path / "results" / "teacher_quality.json"
    p.parent.mkdir()
    p.write_text(json.dumps(_res([4.00, 4.01], 4.10, 4.20, 4.30)))
    fig = plots.premise_curves(p)
    assert "Premise holds" in fig._suptitle.get_text()
    assert len(fig.axes[0].lines) == 3 and (tmp_path / "figures" / "03_premise.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- the premise's extrapolated budget

def _curves(gap_fn, n=10, t_end=2.4e6, base=6.5):
    """Student (two seeds, equal) and weak-teacher curves whose gap at tokens t is ``gap_fn(t)``."""
    ts = [t_end * (i + 1) / n for i in range(n)]
    st = [{"tokens": t, "mlm_loss": base - 0.1 * i, "mlm_accuracy": 0.1} for i, t in enumerate(ts)]
    return {"student": st, "student:s43": [dict(p) for p in st],
            "teacher-weak": [{"tokens": p["tokens"], "mlm_loss": p["mlm_loss"] + gap_fn(p["tokens"]),
                              "mlm_accuracy": 0.1} for p in st]}


def test_gap_trend_recovers_a_log_linear_gap_and_its_budget():
    from dwt_lib.studies.premise import gap_trend
    a, b = -0.15, 0.012                                  # gap = a + b ln t: 0.026 at 2.4M tokens
    tr = gap_trend(_curves(lambda t: a + b * math.log(t)), "student", "teacher-weak", need=0.05)
    assert tr["fit"][0] == pytest.approx(a, abs=1e-9) and tr["fit"][1] == pytest.approx(b, abs=1e-9)
    assert tr["tokens_now"] == pytest.approx(2.4e6)
    assert tr["tokens_needed"] == pytest.approx(math.exp((0.05 - a) / b), rel=1e-6)   # ~17M tokens
    assert not tr["beyond"] and len(tr["points"]) == 10


def test_gap_trend_fits_only_the_second_half():
    from dwt_lib.studies.premise import gap_trend
    # a big early gap that closes, then a flat 0.02: the fit sees only the flat part -> not growing
    tr = gap_trend(_curves(lambda t: 0.3 if t < 1.1e6 else 0.02), "student", "teacher-weak", need=0.05)
    assert tr["fit"][1] == pytest.approx(0.0, abs=1e-12) and tr["tokens_needed"] is None


@pytest.mark.parametrize("gap, need, expect", [
    (lambda t: 0.08, 0.05, "now"),                       # already there
    (lambda t: 0.02 - 1e-9 * t, 0.05, None),             # shrinking
    (lambda t: 0.02 + 1e-4 * math.log(t), 0.05, "beyond"),   # growing, but 1000x the run is not enough
    (lambda t: 0.02 + 0.01 * math.log(t), float("nan"), None),   # one seed: the required gap is unknown
])
def test_gap_trend_edge_cases(gap, need, expect):
    from dwt_lib.studies.premise import gap_trend
    tr = gap_trend(_curves(gap), "student", "teacher-weak", need=need)
    if expect == "now":
        assert tr["tokens_needed"] == tr["tokens_now"]
    elif expect == "beyond":
        assert tr["beyond"] and tr["tokens_needed"] > 1000 * tr["tokens_now"]
    else:
        assert tr["tokens_needed"] is None


def test_premise_check_reports_the_extrapolated_budget():
    res = _res([6.00, 6.01], 6.03, 6.20, 6.30, acc=0.14)
    res["curves"] = _curves(lambda t: -0.15 + 0.012 * math.log(t), base=6.3)
    text = premise_check(res)
    assert "extrapolated" in text and "rough guide" in text
    weak_row = next(r for r in text.splitlines() if r.startswith("| weak teacher |"))
    assert "+0.008 nats per doubling of tokens" in weak_row and "x this run's 2.4M)" in weak_row
    # only the short gap is extrapolated: the teachers' gaps (0.17, 0.10) already pass
    assert all(r.endswith("|  |") for r in text.splitlines() if r.startswith(("| very weak", "| extremely weak")))


# ----------------------------------------------------------------------------- the evaluation's resolving power

def _eval_res(student_means, baselines, student_avgs, teacher_avgs):
    from dwt_lib.studies import spread as sp
    scores = [{"run": "student", "fraction": 1.0, "task": t, "mean": m, "majority_baseline": b}
              for t, m, b in zip(["sst2", "cola", "mrpc"], student_means, baselines)]
    cmp = sp.compare((teacher_avgs, teacher_avgs[:1]), (student_avgs, student_avgs[:2]))
    return {"scores": scores, "roles": ["weak", "extremely_weak"], "size_ratio": {"weak": 0.8, "extremely_weak": 0.5},
            "teacher_gap_compare": {"weak": None, "extremely_weak": cmp}}


def test_evaluation_check_passes_when_the_student_clears_baselines_and_the_smallest_teacher():
    from dwt_lib.studies.results import evaluation_check
    e = evaluation_check(_eval_res([80.0, 12.0, 68.0], [50.9, 0.0, 68.4], [60.0, 60.5, 61.0], [55.0, 55.2, 54.8]))
    assert e["ok"] and e["tasks_below_baseline"] == ["mrpc"]          # one task at the baseline is allowed
    assert e["lead_over_smallest_teacher"] == pytest.approx(5.5)
    assert "2 of 3 tasks (not on mrpc)" in e["text"] and "can resolve" in e["text"]


@pytest.mark.parametrize("means, student, teacher", [
    ([80.0, 0.0, 68.0], [60.0, 60.5, 61.0], [55.0, 55.2, 54.8]),   # two tasks at the baseline
    ([80.0, 12.0, 70.0], [60.0, 58.0, 62.0], [59.0, 59.5, 58.5]),   # lead within the noise
    ([80.0, 12.0, 70.0], [55.0, 55.2, 54.8], [60.0, 60.5, 61.0]),   # the smallest teacher is better
])
def test_evaluation_check_fails_and_says_so(means, student, teacher):
    from dwt_lib.studies.results import evaluation_check
    e = evaluation_check(_eval_res(means, [50.9, 0.0, 68.4], student, teacher))
    assert not e["ok"] and "cannot resolve" in e["text"]
