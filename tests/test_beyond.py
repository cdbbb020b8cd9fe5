"""Notebook 06's arms: the KI decay, the teacher-aware soft weight (values by hand, resume-exactness), the
label-smoothed target's KL, function-preserving growth (exact function at init, the gate by hand), the
profile's settings and their errors, and that no existing run changes its identity.

The end-to-end runs are 4 steps of 4 sequences of the smoke models, with the 1-layer weak teacher
where growth does not need the 4-layer one.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from dwt_lib.config import arms as beyond
from dwt_lib.models import growth, targets
from dwt_lib.core.errors import ConfigError
from dwt_lib.core.hashing import jsonable
from dwt_lib.config.load import load_params
from dwt_lib.models.losses import soft_loss
from dwt_lib.models.encoder import SparseMLM, build_model
from dwt_lib.studies.results import read_log
from dwt_lib.runs.registry import Run, outputs_dir
from helpers import interrupt_at
from dwt_lib.config.schedules import make_schedule
from dwt_lib.studies.identity import _base_key, all_run_names, ensure_pretrained, named_run, study_runs
from dwt_lib.config.arms import NO_PRETRAINING, base_arm_names

RUN = {
    "pretrain.max_steps": 4, "pretrain.batch_size_per_device": 4, "pretrain.eval_batches": 1,
    "pretrain.log_every": 1, "pretrain.eval_every": 2, "pretrain.checkpoint_every": 2,
    "pretrain.snapshot_fractions": [0.5, 1.0], "pretrain.precision": "fp32",
    "model.teachers.extremely_weak": "tiny-teacher-1l", "launch.num_threads": 1,
}


@pytest.fixture(scope="module", autouse=True)
def shared_data_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWT_CACHE_DIR", str(tmp_path_factory.mktemp("data-cache")))
        yield


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------------------- identities

def _old_key_id(cfg, name: str) -> str:
    """The id the code before notebook 06 gave a run (its pretrain_run, copied): the regression pin. It still
    calls today's ``studies._base_key``, so it pins what changed around that function, not inside it."""
    def old(name, size, teacher=None, init="random", alpha_soft=None):
        key = _base_key(cfg, size)
        key["init"] = init
        key["teacher"] = teacher.id if teacher else None
        kind = "teacher" if name.startswith("teacher-") else ("dwt" if teacher else "student")
        if teacher:
            d = cfg.distill
            key.update(alpha_hard=d.alpha_hard, alpha_soft=alpha_soft or d.alpha_soft, temperature=d.temperature,
                       soft_loss_positions=d.soft_loss_positions, scale_by_t2=d.scale_by_t2)
        return Run(kind=kind, name=name, key=jsonable(key), root=outputs_dir(cfg))
    t = cfg.model.teachers
    if name.startswith("teacher-"):
        return old(name, t[name[8:]]).id
    if name == "student":
        return old(name, cfg.model.student).id
    teacher = named_run(cfg, f"teacher-{cfg.studies.soft_weight_teacher if name.startswith('soft-') else name.split('-', 1)[1]}")
    if name.startswith("soft-"):
        return old(name, cfg.model.student, teacher, alpha_soft=cfg.studies.soft_weight[name[5:]]).id
    return old(name, cfg.model.student, teacher, "remap" if name.startswith("remap-") else "random").id


@pytest.mark.parametrize("profile", ["smoke", "mini", "paper"])
def test_existing_runs_keep_their_ids(profile):
    """Notebook 06's settings enter only its own runs' keys: every run of notebooks 03-05 keeps its id."""
    cfg = load_params(profile)
    assert cfg.studies.beyond, "the profile has notebook 06's arms"
    for name in base_arm_names(cfg):
        if name == NO_PRETRAINING:          # newer than notebook 06 (issue 20): its id is pinned in test_golden_ids
            continue
        run = named_run(cfg, name)
        assert run.id == _old_key_id(cfg, name), name
        assert not {"target", "grow"} & set(run.key), name
    names = all_run_names(cfg)
    arms = [n for n in names if n.startswith("beyond-")]
    assert len(arms) == len(cfg.studies.beyond) == 6
    assert len({named_run(cfg, n).id for n in arms} | {named_run(cfg, n).id for n in base_arm_names(cfg)}) \
        == len(set(base_arm_names(cfg)) - {"soft-normal"}) + len(arms)       # all new, all distinct


def test_a_profile_lists_all_its_arms(tmp_path):
    """`studies.beyond` replaces the parent's map: {} runs no arm, one arm runs only that one."""
    p = tmp_path / "mine.yaml"
    p.write_text("extends: smoke\nstudies: {beyond: {}}\n")
    assert not [n for n in all_run_names(load_params(p)) if n.startswith("beyond-")]
    p.write_text("extends: smoke\nstudies: {beyond: {hot: {question: temperature, teacher: weak, against: [dwt-weak],"
                 "\n  temperature: {kind: constant, value: 4.0}}}}\n")
    assert [n for n in all_run_names(load_params(p)) if n.startswith("beyond-")] == ["beyond-hot"]


def test_plan_and_study_list_the_new_runs():
    from dwt_lib.studies.plan import format_plan, make_plan
    cfg = load_params("mini")
    text = format_plan(make_plan(cfg))
    for arm in cfg.studies.beyond:
        assert f"beyond-{arm}" in text
    runs = study_runs(cfg, "beyond")
    assert runs[-6:] == [f"beyond-{a}" for a in cfg.studies.beyond] and "remap-weak" in runs
    smoothed = named_run(cfg, "beyond-smoothed")
    assert smoothed.key["teacher"] is None and smoothed.key["target"] == {"kind": "smoothed", "epsilon": 0.1}
    grow = named_run(cfg, "beyond-grow")
    assert grow.key["init"] == "grow" and grow.key["teacher"] == named_run(cfg, "teacher-weak").id
    assert named_run(cfg, "beyond-tau2-extremely_weak").key["temperature"] == {"kind": "constant", "value": 2.0}


@pytest.mark.parametrize("key, value, words", [
    ("studies.beyond.aware.alpha_soft", {"kind": "bogus"}, ["studies.beyond.aware.alpha_soft", "bogus", "teacher_aware",
                                                             "linear_until"]),
    ("studies.beyond.smoothed.target", {"kind": "uniform"}, ["studies.beyond.smoothed.target.kind", "teacher, smoothed"]),
    ("studies.beyond.grow.init", {"kind": "stack"}, ["studies.beyond.grow.init.kind", "random, remap, grow"]),
    ("studies.beyond.grow.init", {"kind": "grow", "ramp_fraction": 0.8}, ["ramp_fraction", "first snapshot"]),
    ("studies.beyond.ki.against", ["dwt-strong"], ["studies.beyond.ki.against", "dwt-strong"]),
    ("studies.beyond.tau2-weak.question", "speed", ["question", "soft_weight, temperature"]),
    ("studies.beyond.tau2-weak.temperature", {"kind": "expo"}, ["studies.beyond.tau2-weak.temperature", "expo",
                                                                "constant, linear"]),
    ("studies.beyond.aware.alpha_soft", {"kind": "teacher_aware", "schedule": {"kind": "constant", "value": 1.0},
                                         "floor": 0.0, "decay_fraction": 0.1}, ["ema"]),
    ("studies.beyond.aware.alpha_soft", {"kind": "teacher_aware", "schedule": None, "floor": 0.0,
                                         "decay_fraction": 0.1, "ema": 0.98}, ["aware.alpha_soft.schedule",
                                                                               "expected a schedule"]),
    ("studies.beyond.tau2-weak.temperature", {"kind": "constant", "value": 0.0},
     ["studies.beyond.tau2-weak.temperature", "positive values"]),
])
def test_bad_arm_settings_are_one_clear_error(key, value, words):
    with pytest.raises(ConfigError) as e:
        load_params("smoke", {key: value})
    msg = str(e.value)
    assert msg.startswith("params/smoke.yaml"), msg
    for w in words:
        assert w in msg, msg


# ----------------------------------------------------------------------------- soft weights

def test_ki_decay_by_hand():
    """Qin et al.: a_s = max(0, 1 - step / T_distil), T_distil = half of training."""
    f = make_schedule({"kind": "linear_until", "start": 1.0, "end": 0.0, "until": 0.5})
    assert [f(s, 100) for s in (0, 10, 25, 49, 50, 80, 100)] == pytest.approx([1, 0.8, 0.5, 0.02, 0, 0, 0])


AWARE = {"kind": "teacher_aware", "schedule": {"kind": "constant", "value": 2.0}, "floor": 0.5,
         "decay_fraction": 0.1, "ema": 0.5}


def test_teacher_aware_weight_by_hand():
    """EMAs (decay 0.5) of student losses 5, 3, 1 and teacher 4, 4, 4: 5, 4, 2.5 vs 4; the student is ahead
    after step 2, so from step 3 a_s goes from 2 to the floor 0.5 over 0.1 x 40 = 4 steps."""
    w = targets.TeacherAwareWeight(AWARE, 40)
    got = []
    for step, (s, t) in enumerate([(5, 4), (3, 4), (1, 4)] + [(1, 4)] * 6):
        got.append(w(step))
        w.update(step, s, t)
        if step == 1:
            assert w.state == {"ema_student": 4.0, "ema_teacher": 4.0, "crossed_at": None}   # equal is not ahead
    assert w.state["crossed_at"] == 3
    assert got == pytest.approx([2, 2, 2, 2, 1.625, 1.25, 0.875, 0.5, 0.5])
    assert targets.aware_weight(2, 40, AWARE, None) == 2.0


def test_teacher_aware_weight_resumes_identically():
    """Stopped at any step, its state through JSON (as in a checkpoint) into a fresh one: the same weights."""
    g = torch.Generator().manual_seed(0)
    student = (6 - torch.arange(30) * 0.15 + torch.rand(30, generator=g)).tolist()
    teacher = (4.5 + 0.3 * torch.rand(30, generator=g)).tolist()

    def go(w, steps):
        out = []
        for s in steps:
            out.append(w(s))
            w.update(s, student[s], teacher[s])
        return out
    spec = dict(AWARE, ema=0.8)
    ref = targets.TeacherAwareWeight(spec, 30)
    whole = go(ref, range(30))
    cross = ref.state["crossed_at"]
    assert 3 < cross < 25 and len(set(whole)) > 2, "the student overtakes and the weight decays within 30 steps"
    for k in (2, cross - 1, cross, cross + 1, 27):
        first = targets.TeacherAwareWeight(spec, 30)
        head = go(first, range(k))
        second = targets.TeacherAwareWeight(spec, 30)
        second.state = json.loads(json.dumps(first.state))
        assert head + go(second, range(k, 30)) == whole, k
    # stopped mid-decay, a resume that forgot the state (EMAs and crossing) gives other weights
    first = targets.TeacherAwareWeight(spec, 30)
    head = go(first, range(cross + 1))
    assert head + go(targets.TeacherAwareWeight(spec, 30), range(cross + 1, 30)) != whole


def test_teacher_aware_run_resumed_matches_uninterrupted(tmp_path, monkeypatch):
    """A teacher-aware run killed after its checkpoint at step 2 resumes to the same log (EMAs, a_s) and weights."""
    over = {**RUN, "studies.beyond.aware.teacher": "extremely_weak",
            "studies.beyond.aware.alpha_soft": dict(AWARE, ema=0.9, decay_fraction=0.5)}
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path / "a"))
    cfg = load_params("smoke", over)
    ensure_pretrained(cfg, "beyond-aware", progress=False)
    ref_log, ref_w = read_log(cfg, "beyond-aware"), load_file(str(named_run(cfg, "beyond-aware").dir / "model" /
                                                                   "model.safetensors"))
    assert all("ema_student" in r and "ema_teacher" in r for r in ref_log)
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path / "b"))
    ensure_pretrained(cfg, "teacher-extremely_weak", progress=False)
    with monkeypatch.context() as mp:
        interrupt_at(mp, 3)
        with pytest.raises(KeyboardInterrupt):
            ensure_pretrained(cfg, "beyond-aware", progress=False)
    ckpt = torch.load(named_run(cfg, "beyond-aware").dir / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["aware"]["ema_student"] is not None
    ensure_pretrained(cfg, "beyond-aware", progress=False)
    log = read_log(cfg, "beyond-aware")
    assert [{k: r[k] for k in ("step", "alpha_soft", "ema_student", "ema_teacher", "hard")} for r in log] == \
           [{k: r[k] for k in ("step", "alpha_soft", "ema_student", "ema_teacher", "hard")} for r in ref_log]
    w = load_file(str(named_run(cfg, "beyond-aware").dir / "model" / "model.safetensors"))
    assert all(torch.equal(w[k], ref_w[k]) for k in ref_w)


# ----------------------------------------------------------------------------- smoothed target

@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_smoothed_target_kl_against_numpy(tau):
    """The soft loss towards (1 - eps) onehot + eps / V, against KL(q_tau || p_tau) tau^2 computed in numpy."""
    V, eps = 7, 0.2
    g = torch.Generator().manual_seed(1)
    s = torch.randn(5, V, generator=g, dtype=torch.float64).float()
    y = torch.tensor([0, 3, 6, 3, 1])
    got = soft_loss(s, targets.SmoothedTarget(V, eps)(y), temperature=tau).item()
    q = np.full((5, V), eps / V)
    q[np.arange(5), y.numpy()] += 1 - eps
    qt = q ** (1 / tau)
    qt /= qt.sum(1, keepdims=True)
    z = s.double().numpy() / tau
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = (qt * (np.log(qt) - logp)).sum(1).mean() * tau ** 2
    assert got == pytest.approx(want, rel=1e-5)
    assert math.isclose(np.exp(targets.SmoothedTarget(V, eps)(y).double().numpy()).sum(1).mean(), 1.0, rel_tol=1e-6)
    with pytest.raises(ValueError, match="label"):
        targets.SmoothedTarget(V, eps)(torch.tensor([1, -100]))


def test_smoothed_run_trains_without_a_teacher(outputs):
    cfg = load_params("smoke", RUN)
    res = ensure_pretrained(cfg, "beyond-smoothed", progress=False)
    assert res["teacher_params"] is None
    assert not list((outputs / "smoke" / "runs").glob("teacher-*")), "no teacher trained for it"
    log = read_log(cfg, "beyond-smoothed")
    assert all(r["soft"] > 0 and r["alpha_soft"] == 1.0 for r in log)


# ----------------------------------------------------------------------------- growth

def _random_ln(model, seed=0):
    """LayerNorm weights and biases away from 1 and 0, so an identity that only holds for LN(1, 0) fails."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "LayerNorm" in n:
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=g))


def test_gate_by_hand():
    """h + m (layer(h) - h) on one layer, against the same sum done by hand; m ramps 0, 1/4, ... 1."""
    assert [growth.gate_value(s, 4) for s in range(6)] == [0, 0.25, 0.5, 0.75, 1, 1]
    assert growth.ramp_steps(0.1, 600) == 60 and growth.ramp_steps(0.1, 4) == 1
    assert growth.layer_sources(4, 6) == [0, 1, 2, None, None, 3]
    torch.manual_seed(0)
    m = build_model("tiny-teacher-1l", 50, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).eval()
    layer = m.bert.encoder.layer[0]
    h = torch.randn(2, 5, 64)
    plain = layer(h)
    plain = plain[0] if isinstance(plain, tuple) else plain
    gates = growth.Gates(m, [0])
    for v in (0.0, 0.25, 1.0):
        gates.set(v)
        out = layer(h)
        out = out[0] if isinstance(out, tuple) else out
        torch.testing.assert_close(out, h + v * (plain - h), rtol=0, atol=1e-6)
    gates.set(0.0)
    assert torch.equal(layer(h)[0] if isinstance(layer(h), tuple) else layer(h), h)
    gates.remove()


def test_grown_student_computes_the_teachers_function():
    """4-layer teacher -> 6-layer student: MLM logits equal at init (float tolerance), on both the full and the
    sparse (masked rows only) paths; with the gates open the new random layers change them."""
    torch.manual_seed(0)
    kw = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    teacher = build_model("tiny-teacher-4l", 120, **kw).eval()
    _random_ln(teacher)
    student = build_model("tiny-student", 120, **kw).eval()
    gates, report = growth.grow(teacher, student)
    assert report["new_layers"] == [3, 4] and report["layer_sources"] == [0, 1, 2, "new", "new", 3]
    assert report["sources"]["bert.encoder.layer.5.output.dense.weight"] == "bert.encoder.layer.3.output.dense.weight"
    ids = torch.randint(5, 120, (3, 16), generator=torch.Generator().manual_seed(2))
    attn = torch.ones_like(ids, dtype=torch.bool)
    attn[0, 12:] = False
    assert growth.function_gap(teacher, student, ids, attn) < 1e-5
    select = torch.rand(ids.shape, generator=torch.Generator().manual_seed(3)) < 0.2
    torch.testing.assert_close(SparseMLM(student)(ids, attn, select), SparseMLM(teacher)(ids, attn, select),
                               rtol=0, atol=1e-5)
    gates.set(1.0)
    assert growth.function_gap(teacher, student, ids, attn) > 1e-3
    with pytest.raises(ValueError, match="hidden_size"):
        growth.grow(build_model("mini-teacher-4l", 120), build_model("tiny-student", 120))


def test_grow_run_starts_at_the_teacher_and_opens_its_gates(outputs):
    cfg = load_params("smoke", RUN)
    ensure_pretrained(cfg, "beyond-grow", progress=False)
    run = named_run(cfg, "beyond-grow")
    rep = json.loads((run.dir / "grow_report.json").read_text())
    assert rep["function_gap"] < 1e-4 and rep["new_layers"] == [3, 4]
    log = read_log(cfg, "beyond-grow")
    assert [r["gate"] for r in log] == [1.0] * 4          # ramp 0.1 x 4 steps = 1 step
    init = load_file(str(run.dir / "init" / "model.safetensors"))
    teacher = load_file(str(named_run(cfg, "teacher-weak").dir / "model" / "model.safetensors"))
    assert torch.equal(init["bert.encoder.layer.5.attention.self.query.weight"],
                       teacher["bert.encoder.layer.3.attention.self.query.weight"])


def test_figure_titles_count_the_resolved_differences(tmp_path):
    """Each notebook-06 figure says how many of its end-of-training differences are resolved: the same
    comparisons the summary counts (here the committed mini result, then with one marked resolved)."""
    from dwt_lib.notebook import plots
    from dwt_lib.core.paths import REPO
    res = json.loads((REPO / "outputs" / "mini" / "results" / "beyond.json").read_text())
    path = tmp_path / "results" / "beyond.json"
    path.parent.mkdir()
    path.write_text(json.dumps(res))
    last = max(res["fractions"])
    at_end = [c for c in res["questions"]["growth"]["comparisons"] if c["fraction"] == last]
    assert len(at_end) == 2
    for c in at_end:
        c["resolved"] = False
    path.write_text(json.dumps(res))
    fig = plots.beyond(path, "growth")
    assert "0 of 2 differences at the end resolved (> 2 SE)" in fig._suptitle.get_text()
    at_end[0]["resolved"] = True
    path.write_text(json.dumps(res))
    fig = plots.beyond(path, "growth")
    assert "1 of 2 differences at the end resolved" in fig._suptitle.get_text()
