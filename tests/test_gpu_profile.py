"""The one-GPU profile, exercised on the CPU: it loads with its launch config, its study plan lists the
runs, the plan's wall time is the FLOPs over (MFU x peak), it refuses a machine without CUDA with the
fix, a tiny version of it trains in bf16 and fine-tunes in parallel workers, and its bench runs."""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from dwt_lib.config.load import load_params
from dwt_lib.studies.identity import all_run_names, check_device, finetune_run, named_run, study_runs

REPO = Path(__file__).resolve().parent.parent
OFFLINE_TASKS = ["cola", "sst2", "mrpc", "stsb", "rte"]
GLUE_TRAIN = {"cola": 8551, "sst2": 67349, "mrpc": 3668, "stsb": 5749, "rte": 2490}


@pytest.fixture(scope="module")
def gpu():
    """The gpu profile's notebooks 01-05 (the 10-minute plan); notebook 06's arms are checked apart."""
    return load_params("gpu", {"studies.beyond": {}})


def test_gpu_profile_loads_with_its_launch_config(gpu):
    assert "extends: paper" in (REPO / "params" / "gpu.yaml").read_text()
    la = gpu.launch
    assert (la.num_processes, la.device, la.accelerate_config) == (1, "cuda", "params/accelerate/1gpu.yaml")
    acc = yaml.safe_load((REPO / la.accelerate_config).read_text())
    assert acc["num_processes"] == la.num_processes and acc["use_cpu"] is False and acc["distributed_type"] == "NO"
    assert gpu.pretrain.precision == "bf16" and gpu.finetune.precision == "bf16"
    # every offline GLUE task with train data, in full except SST-2's cap, 3 seeds
    assert sorted(gpu.finetune.tasks) == sorted(OFFLINE_TASKS) and len(gpu.finetune.seeds) >= 3
    assert gpu.finetune.max_eval_examples is None
    assert all(GLUE_TRAIN[t] <= gpu.finetune.max_train_examples for t in OFFLINE_TASKS if t != "sst2")
    assert gpu.finetune.max_train_examples >= 20000
    # the shapes come from the profile's model.sizes: the paper's depths at one width
    shapes = {r: named_run(gpu, f"teacher-{r}").key["shape"] for r in gpu.model.teachers}
    student = named_run(gpu, "student").key["shape"]
    assert student["num_hidden_layers"] == 6
    assert {r: s["num_hidden_layers"] for r, s in shapes.items()} == {"weak": 4, "very_weak": 2, "extremely_weak": 1}
    assert {s["hidden_size"] for s in shapes.values()} == {student["hidden_size"]}
    assert set(gpu.model.sizes) >= {gpu.model.student, *gpu.model.teachers.values()}


def test_gpu_study_plan_lists_every_run(gpu):
    full = all_run_names(load_params("gpu"))                          # with notebook 06's arms, after 01-05's
    assert full[:len(all_run_names(gpu))] == all_run_names(gpu)
    assert len([n for n in full if n.startswith("beyond-")]) == 6
    assert all_run_names(gpu) == [
        "teacher-weak", "teacher-very_weak", "teacher-extremely_weak", "student", "random-init",
        "dwt-weak", "dwt-very_weak", "dwt-extremely_weak", "soft-normal", "soft-strong", "soft-decay", "remap-weak"]
    assert study_runs(gpu, "param_remap") == ["remap-weak", "dwt-weak"]
    assert named_run(gpu, "soft-normal").id == named_run(gpu, "dwt-weak").id        # trained once
    # "hundreds of millions of tokens": every run sees >= 100M tokens
    assert gpu.pretrain.max_steps * gpu.pretrain.batch_size_per_device * gpu.data.max_seq_length >= 100e6


def _flops_per_token(h, layers, vocab, seq, masked_frac, train=True):
    """Independent count: per token, per layer 24 h^2 (QKV, output, 4h feed-forward, x2 for multiply-add)
    plus 4 * seq * h (scores and weighted sum); the head (h x h transform, h x vocab decoder) on masked tokens."""
    body = layers * (24 * h * h + 4 * seq * h)
    head = masked_frac * 2 * (h * h + h * vocab)
    return (3 if train else 1) * (body + head)


def test_plan_wall_time_is_flops_over_mfu_times_peak(gpu):
    from dwt_lib.studies.plan import make_plan
    plan = make_plan(gpu)
    dt = plan["device_time"]
    S, V = gpu.data.max_seq_length, gpu.data.vocab_size
    frac = gpu.data.mlm_probability * (S - 2) / S                   # masked tokens per position
    H = named_run(gpu, "student").key["shape"]["hidden_size"]
    depth = {"student": 6, "weak": 4, "very_weak": 2, "extremely_weak": 1}
    per_token = sum(_flops_per_token(H, depth[r], V, S, frac) for r in ("weak", "very_weak", "extremely_weak"))
    per_token += _flops_per_token(H, 6, V, S, frac)                 # the standalone student
    # six DWT runs: dwt-{weak,very_weak,extremely_weak}, soft-strong, soft-decay, remap-weak (weak teacher)
    for r in ("weak", "very_weak", "extremely_weak", "weak", "weak", "weak"):
        per_token += _flops_per_token(H, 6, V, S, frac) + _flops_per_token(H, depth[r], V, S, frac, train=False)
    tokens = gpu.pretrain.max_steps * gpu.pretrain.batch_size_per_device * S
    flops = per_token * tokens
    assert plan["total_pflop"] * 1e15 == pytest.approx(flops, rel=1e-9)
    expected = flops / (gpu.launch.assumed_mfu * gpu.launch.peak_tflops * 1e12)
    assert dt["pretrain_s"] == pytest.approx(expected, rel=1e-9)
    # the profile is sized for <= 10 minutes at its stated MFU, fine-tuning included
    assert dt["total_s"] <= 10 * 60
    # fine-tuning: teacher quality 8 models (with random-init) x 5 tasks x 3 seeds; soft weight 3 arms x 4 snapshots x 2 tasks
    # x 3 seeds, less soft-normal at 100% (= dwt-weak, already fine-tuned); remap 4 x 2 x 3
    seeds, fr = len(gpu.finetune.seeds), len(gpu.pretrain.snapshot_fractions)
    assert dt["finetune_runs"] == 8 * 5 * seeds + (3 * fr * 2 * seeds - 2 * seeds) + fr * 2 * seeds
    steps = {t: math.ceil(gpu.finetune.epochs_per_task.get(t, gpu.finetune.epochs)
                          * math.ceil(min(GLUE_TRAIN[t], gpu.finetune.max_train_examples) / gpu.finetune.batch_size))
             for t in OFFLINE_TASKS}
    assert dt["finetune_steps_per_task"] == steps
    n_over = 3 * fr * seeds - seeds + fr * seeds                     # per study task (cola, sst2)
    assert dt["finetune_steps"] == 8 * seeds * sum(steps.values()) + n_over * (steps["cola"] + steps["sst2"])
    assert dt["finetune_s"] == pytest.approx(dt["finetune_steps"] * dt["finetune_step_s"] / gpu.launch.finetune_workers)


def test_cpu_profiles_print_no_device_time():
    from dwt_lib.studies.plan import format_plan, make_plan
    assert "device_time" not in make_plan(load_params("smoke"))
    assert "expected on 1 device(s) of 989 TFLOP/s" in format_plan(make_plan(load_params("gpu")))


def test_gpu_profile_refuses_a_machine_without_cuda(gpu, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    from dwt_lib.core.errors import PreflightError
    with pytest.raises(PreflightError, match=r"launch\.device: cuda, but torch .* sees no CUDA GPU") as e:
        check_device(gpu)
    assert "--set launch.device=cpu" in str(e.value)
    check_device(gpu.replace(**{"launch.device": "cpu"}))              # the stated way out
    from dwt_lib.cli import main
    assert main(["reproduce", "--profile", "gpu"]) == 2                # before any kernel starts
    err = capsys.readouterr().err.strip()
    assert err.startswith("dwt: profile gpu sets launch.device: cuda") and "\n" not in err
    assert err.endswith("shows the FLOPs)")


# A tiny version of the gpu profile: its own settings (bf16, dropout 0, launch) with the smoke data (the
# package's sample, cached by the other tests) and the gpu profile's size names redefined to width 32 through model.sizes.
def tiny_gpu(**extra):
    from dwt_lib.core.hashing import jsonable
    smoke = load_params("smoke").data
    data = {f"data.{f.name}": jsonable(getattr(smoke, f.name)) for f in dataclasses.fields(smoke)}
    tiny = {"gpu-student": {"layers": 2, "hidden": 32, "heads": 2}, "gpu-teacher-4l": {"layers": 1, "hidden": 32, "heads": 2},
            "gpu-teacher-2l": {"layers": 1, "hidden": 32, "heads": 2}, "gpu-teacher-1l": {"layers": 1, "hidden": 32, "heads": 2}}
    return load_params("gpu", {**data, "model.sizes": tiny, "launch.device": "cpu", "launch.finetune_workers": 2,
                               "pretrain.max_steps": 4, "pretrain.batch_size_per_device": 8, "pretrain.log_every": 2,
                               "pretrain.eval_every": 2, "pretrain.eval_batches": 1, "pretrain.checkpoint_every": 2,
                               "pretrain.snapshot_fractions": [1.0], "finetune.max_train_examples": 32,
                               "finetune.max_eval_examples": 32, "finetune.epochs": 1, "finetune.epochs_per_task": {},
                               "finetune.batch_size": 16, "finetune.source": load_params("smoke").finetune.source,
                               **extra})      # smoke's sources (the shipped sample): runs with no mirror


def test_tiny_gpu_profile_trains_in_bf16_and_finetunes_in_parallel(tmp_path, monkeypatch):
    from dwt_lib.studies import identity as studies
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    cfg = tiny_gpu()
    seen = []
    real = torch.autocast

    class Spy(real):                       # records what the training loop asks autocast for
        def __init__(self, device_type, dtype=None, enabled=True, **kw):
            seen.append((device_type, dtype, enabled))
            super().__init__(device_type, dtype=dtype, enabled=enabled, **kw)

    monkeypatch.setattr(torch, "autocast", Spy)
    res = studies.ensure_pretrained(cfg, "student", progress=False)
    monkeypatch.setattr(torch, "autocast", real)
    assert ("cpu", torch.bfloat16, True) in seen
    assert math.isfinite(res["final_eval"]["mlm_loss"]) and res["steps"] == 4
    assert res["run"]["key"]["shape"]["hidden_size"] == 32
    # two workers, three jobs of which two are the same run: two fine-tuning runs, each once
    jobs = [("student", "sst2", 1, 1.0), ("student", "mrpc", 1, 1.0), ("student", "sst2", 1, 1.0)]
    studies.finetune_parallel(cfg, jobs, workers=2, progress=False)
    runs = {finetune_run(cfg, n, t, s, f).id for n, t, s, f in jobs}
    assert len(runs) == 2 and all((tmp_path / cfg.profile / "runs" / r / "result.json").exists() for r in runs)
    r = json.loads((tmp_path / cfg.profile / "runs" / finetune_run(cfg, "student", "mrpc", 1, 1.0).id
                    / "result.json").read_text())
    assert r["task"] == "mrpc" and r["n_train"] == 32 and 0 <= r["score"] <= 100


def test_gpu_bench_smoke(tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_study
    finally:
        sys.path.remove(str(REPO / "bench"))
    out = tmp_path / "bench.json"
    assert gpu_study.main(["--smoke", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert set(res["kinds"]) == {"teacher-weak", "student", "dwt-weak"}
    assert all(k["tokens_per_s"] > 0 for k in res["kinds"].values()) and res["finetune_s_per_step"] > 0
    assert res["total_s"] == pytest.approx(res["pretrain_s"] + res["finetune_s"] + res["overhead_s"])


def test_git_commit_outside_git_comes_from_the_environment(tmp_path, monkeypatch):
    # the GPU machine gets a copy of the working tree without .git: the commit travels in DWT_GIT_COMMIT
    from dwt_lib.runs import registry as runs
    monkeypatch.setattr(runs, "REPO", tmp_path)
    monkeypatch.delenv("DWT_GIT_COMMIT", raising=False)
    assert runs.git_commit() == "unknown"
    monkeypatch.setenv("DWT_GIT_COMMIT", "abc123")
    assert runs.git_commit() == "abc123"


def test_verdict_with_identical_seeds():
    # found by a tiny run of this profile: every seed at the majority baseline gives a zero standard error
    from dwt_lib.studies.spread import verdict  # the rule over both spreads (fine-tuning, pre-training seeds)
    assert verdict(0.0, 0.0, 0.0).endswith("every seed scored the same, so no error bar")
    assert verdict(3.0, 1.0, 0.5).endswith(": resolved") and "one fine-tuning seed" in verdict(1.0, float("nan"), 0.5)
