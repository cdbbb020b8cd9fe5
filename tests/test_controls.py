"""The studies' controls and summaries (issue 20, items 4 and 5): a random-init (no pre-training) run, the GLUE
average over the paper's task set, the learning-rate selection's bias, per-task differences, fine-tuning runs that
collapsed, and summaries a reader scans (a headline, a table, at most ~80 words of prose)."""
import json
import math
from pathlib import Path

import pytest

from dwt_lib.config.load import load_params
from dwt_lib.config.tasks import average_tasks
from dwt_lib.studies import beyond, identity, results
from dwt_lib.studies.plan import make_plan
from dwt_lib.studies.premise import premise_check
from dwt_lib.studies.text import prose_words

REPO = Path(__file__).resolve().parent.parent
SMALL = {"pretrain.max_steps": 4, "pretrain.log_every": 2, "pretrain.eval_every": 4, "pretrain.checkpoint_every": 4,
         "finetune.tasks": ["sst2"], "finetune.max_train_examples": 32, "finetune.max_eval_examples": 32}


# ----------------------------------------------------------------------------- random-init

def test_random_init_is_the_student_untrained_and_fine_tunes(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    cfg = load_params("smoke", SMALL)
    run = identity.named_run(cfg, "random-init")
    student = identity.named_run(cfg, "student")
    assert run.key["pretrain"]["max_steps"] == 0 and run.key["size"] == student.key["size"]
    assert run.id != student.id and run.key["teacher"] is None
    assert "random-init" in identity.study_runs(cfg, "teacher_quality")
    row = next(r for r in make_plan(cfg)["rows"] if r["run"] == "random-init")
    assert row["steps"] == 0 and row["pflop"] == 0
    res = identity.ensure_pretrained(cfg, "random-init", progress=False)
    assert res["steps"] == 0 and res["tokens_seen"] == 0
    assert set(res["snapshots"].values()) == {"model"}                  # every snapshot is the initial model
    assert (run.dir / "model" / "model.safetensors").is_file()
    ft = identity.ensure_finetuned(cfg, "random-init", "sst2", cfg.finetune.seeds[0])
    assert 0 <= ft["score"] <= 100
    # the same weights as the student's at step 0: same seed, same shape (the training loop builds both alike)
    from safetensors.torch import load_file
    import torch
    from dwt_lib.models.encoder import build_model, model_kwargs, special_ids
    from dwt_lib.data.prepare import prepare_pretraining_data
    tok = prepare_pretraining_data(cfg).tokenizer
    assert abs(res["final_eval"]["mlm_loss"] - math.log(len(tok))) < 1.0     # untrained: about a uniform guess
    torch.manual_seed(cfg.pretrain.seed)
    fresh = build_model(run.key["shape"], len(tok), special_ids=special_ids(tok), **model_kwargs(cfg)).state_dict()
    saved = load_file(str(run.dir / "model" / "model.safetensors"))
    assert saved and all(torch.equal(saved[k], fresh[k]) for k in saved)


def test_max_steps_zero_is_valid_but_negative_is_not():
    assert load_params("smoke", {"pretrain.max_steps": 0}).pretrain.max_steps == 0
    with pytest.raises(ValueError, match="pretrain.max_steps"):
        load_params("smoke", {"pretrain.max_steps": -1})


# ----------------------------------------------------------------------------- the paper's task set

def test_average_tasks_follow_the_paper():
    assert average_tasks(["sst2", "cola", "mrpc", "stsb", "rte"]) == (["sst2", "cola", "mrpc", "stsb"], ["rte"])
    assert average_tasks(["rte", "wnli"]) == (["rte", "wnli"], [])        # none of the paper's: every task
    assert average_tasks(["sst2"]) == (["sst2"], [])


# ----------------------------------------------------------------------------- synthetic result files

def _row(run, task, scores, base=50.0, fraction=1.0, pt=(42, 42, 42), ft=(1, 2, 3)):
    return {"run": run, "fraction": fraction, "task": task, "mean": sum(scores) / len(scores), "std": 0.0,
            "count": len(scores), "scores": list(scores), "pretrain_seeds": list(pt), "finetune_seeds": list(ft),
            "majority_baseline": base}


def test_collapsed_names_the_diverged_seed_only():
    rows = [_row("soft-decay", "sst2", [77.9, 50.2, 76.6]), _row("soft-normal", "sst2", [77.0, 76.0, 78.0]),
            _row("teacher-x", "sst2", [50.1, 50.3, 50.0]),        # all at the baseline: degenerate, not collapsed
            _row("student", "cola", [0.0, 0.0, 4.6], base=0.0)]   # most at the baseline: one seed above it
    text = results.collapsed(rows)
    assert "soft-decay@100% sst2 fine-tuning seed 2 (50.2 vs 76.6-77.9)" in text
    assert "soft-normal" not in text and "teacher-x" not in text and "student" not in text
    two = _row("dwt-weak", "sst2", [77.0, 50.2, 76.0, 78.0, 77.5, 76.5], pt=(42, 42, 42, 43, 43, 43), ft=(1, 2, 3) * 2)
    assert "dwt-weak:s42@100% sst2 fine-tuning seed 2 (50.2" in results.collapsed([two])
    assert results.collapsed(rows[1:]) == ""
    # a summary names the first and counts the rest
    assert results.collapsed([rows[0], two]).endswith("(50.2 vs 76.6-77.9), 1 more.")


def test_selection_bias_recomputes_the_gains_without_the_selection_seed():
    # the student's seed 1 (the selection seed) is lucky: +6 over its other seeds; DWT's seeds are flat
    scores = [_row("student", "sst2", [86.0, 80.0, 80.0]), _row("dwt-weak", "sst2", [81.0, 81.0, 81.0])]
    res = {"seeds": [1, 2, 3], "roles": ["weak"], "scores": scores, "average_tasks": ["sst2"],
           "dwt_gain": {"weak": 81.0 - 82.0}, "lr_selection": {"sst2": {"lr": 1e-3, "seed": 1, "run": "student"}}}
    sb = results.selection_bias(res)
    assert sb["seed"] == 1 and sb["student_selection_seed"] == pytest.approx(86.0)
    assert sb["student_other_seeds"] == pytest.approx(80.0)
    g = sb["gains"]["weak"]
    assert g["all_seeds"] == pytest.approx(-1.0) and g["without_selection_seed"] == pytest.approx(1.0)
    assert g["shift"] == pytest.approx(2.0)
    assert results.selection_bias(dict(res, lr_selection={})) == {}


def test_task_differences_show_each_task_and_the_average():
    scores = [_row("student", "sst2", [80.0, 81.0, 82.0]), _row("dwt-weak", "sst2", [90.0, 90.5, 91.0]),
              _row("student", "rte", [50.0, 51.0, 52.0]), _row("dwt-weak", "rte", [40.0, 41.0, 42.0]),
              _row("student", "cola", [10.0, 11.0, 12.0]), _row("dwt-weak", "cola", [10.0, 11.0, 12.0])]
    res = {"tasks": ["sst2", "cola", "rte"], "average_tasks": ["sst2", "cola"], "scores": scores}
    df = results.task_differences(res, [("dwt-weak", "student")])
    col = df["dwt-weak − student"]
    assert col["sst2"].startswith("+9.50")
    assert col["cola"].startswith("+0.00")
    assert col["rte (not in the average)"].startswith("-10.00")
    assert col["average (sst2, cola)"].startswith("+4.75")


# ----------------------------------------------------------------------------- summaries a reader scans

COMMITTED = sorted((REPO / "outputs").glob("*/results/*.json"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: f"{p.parts[-3]}/{p.stem}")
def test_generated_summaries_are_a_headline_a_table_and_at_most_80_words(path):
    res = json.loads(path.read_text())
    if res["study"] == "teacher_quality":
        texts = [results.teacher_quality_summary(res), premise_check(res)]
    elif res["study"] == "beyond":
        texts = [beyond.summary(res, q) for q in res["questions"]]
    else:
        texts = [results.over_training_summary(res)]
    for text in texts:
        assert text.startswith("**"), text[:80]                   # the headline, in bold
        assert "\n| " in text and "|---|" in text                    # a table
        assert prose_words(text) <= 80, (prose_words(text), text)


def test_prose_words_counts_outside_tables():
    assert prose_words("**a b c.**\n\n| x y | z |\n|---|---|\n| 1 2 3 | 4 |\n\nd e") == 5


def test_random_init_model_is_checked_once():
    from dwt_lib.runs.registry import model_folders
    res = {"snapshots": {"0.50": "model", "1.00": "model"}}
    assert model_folders(Path("/nonexistent"), res) == ["model"]
    assert model_folders(Path("/x"), {"snapshots": {"0.50": "snapshots/frac-0.50", "1.00": "snapshots/frac-1.00"}}) \
        == ["model", "snapshots/frac-0.50", "snapshots/frac-1.00"]
