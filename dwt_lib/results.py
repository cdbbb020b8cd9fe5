"""The three studies' result files, built by running (or reusing) their runs, and their summaries.

Each study writes ``outputs/<profile>/results/<study>.json``: the numbers its figure is drawn
from, with the resolved config, its hash, the git commit and versions (:func:`runs.write_result`).
Figures (:mod:`dwt_lib.plots`) read only these files. Summaries are generated from the numbers,
so a rerun that contradicts the paper says so.
"""
from __future__ import annotations

import json
from pathlib import Path

from .config import Config
from .runs import outputs_dir, read_json, write_result
from .studies import ensure_pretrained, named_run, study_runs, study_scores

#: What the paper reports (Fig. 2 and Sec. 3.1), shown beside our numbers and labelled as the paper's.
PAPER_FIG2 = {
    "standalone_student": 79.89,
    "teachers": {"weak": 77.66, "very_weak": 66.45, "extremely_weak": 53.87},
    "dwt_gain": {"weak": 1.44, "very_weak": -1.37, "extremely_weak": -2.76},
    "size_ratio": {"weak": 0.78, "very_weak": 0.57, "extremely_weak": 0.46},
}


def result_path(cfg: Config, study: str) -> Path:
    """``outputs/<profile>/results/<study>.json``."""
    return outputs_dir(cfg) / "results" / f"{study}.json"


def _pretrain_summary(cfg: Config, name: str) -> dict:
    res = ensure_pretrained(cfg, name)
    return {"run": name, "id": res["run"]["id"], "size": res["run"]["key"]["size"], "params": res["params"],
            "mlm_loss": res["final_eval"]["mlm_loss"], "mlm_accuracy": res["final_eval"]["mlm_accuracy"],
            "wall_time_s": res["provenance"]["wall_time_s"]}


def _task_scores(ft: list[dict]) -> list[dict]:
    """Per (run, fraction, task): mean and std of the score over seeds, and the seeds' scores."""
    import pandas as pd
    df = pd.DataFrame([{"run": r["pretrain_run"], "fraction": r["fraction"], "task": r["task"],
                        "seed": r["seed"], "score": r["score"],
                        "majority_baseline": r.get("majority_baseline")} for r in ft])
    g = df.groupby(["run", "fraction", "task"], sort=False)
    out = g["score"].agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["scores"] = g["score"].apply(list).values
    out["majority_baseline"] = g["majority_baseline"].mean().values
    return out.to_dict("records")


def read_log(cfg: Config, name: str) -> list[dict]:
    """The JSON-lines training log of a pre-training run."""
    p = named_run(cfg, name).dir / "log.jsonl"
    return [json.loads(ln) for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []


# ----------------------------------------------------------------------------- Fig. 2

def teacher_quality(cfg: Config, progress: bool = True) -> dict:
    """Teacher-quality study (paper Fig. 2): pre-train teachers, standalone and DWT students,
    fine-tune each on the profile's tasks, and write ``results/teacher_quality.json``."""
    names = study_runs(cfg, "teacher_quality")
    runs = {n: _pretrain_summary(cfg, n) for n in names}
    tasks = list(cfg.finetune.tasks)
    scores = _task_scores(study_scores(cfg, names, tasks, (1.0,), progress))
    for n in names:
        per_task = {s["task"]: s["mean"] for s in scores if s["run"] == n}
        from .glue import glue_average
        runs[n]["glue_avg"] = glue_average(per_task)
        runs[n]["per_task"] = per_task
    base = runs["student"]["glue_avg"]
    roles = list(cfg.studies.teacher_quality)
    payload = {
        "study": "teacher_quality", "tasks": tasks, "seeds": list(cfg.finetune.seeds), "runs": runs,
        "scores": scores, "roles": roles,
        "dwt_gain": {r: runs[f"dwt-{r}"]["glue_avg"] - base for r in roles},
        "teacher_gap": {r: runs[f"teacher-{r}"]["glue_avg"] - base for r in roles},
        "size_ratio": {r: runs[f"teacher-{r}"]["params"] / runs["student"]["params"] for r in roles},
        "paper": PAPER_FIG2,
    }
    return write_result(result_path(cfg, "teacher_quality"), cfg, payload)


def teacher_quality_table(res: dict):
    """Per-task scores (mean +- std over seeds) of every run, with the GLUE average and the paper's."""
    import pandas as pd
    rows = []
    for name, r in res["runs"].items():
        row = {"run": name, "params (M)": r["params"] / 1e6, "MLM loss": r["mlm_loss"]}
        for s in res["scores"]:
            if s["run"] == name:
                row[s["task"]] = f"{s['mean']:.1f} ± {s['std']:.1f}" if s["count"] > 1 else f"{s['mean']:.1f}"
        row["GLUE avg"] = r["glue_avg"]
        role = name.split("-", 1)[1] if "-" in name else None
        paper = res["paper"]
        if name == "student":
            row["paper GLUE avg"] = paper["standalone_student"]
        elif name.startswith("teacher-"):
            row["paper GLUE avg"] = paper["teachers"].get(role)
        elif name.startswith("dwt-"):
            row["paper GLUE avg"] = paper["standalone_student"] + paper["dwt_gain"].get(role, float("nan"))
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def teacher_quality_summary(res: dict) -> str:
    """One paragraph, generated from the numbers, comparing this run's gains with the paper's."""
    base = res["runs"]["student"]["glue_avg"]
    parts = [f"The standalone student scores {base:.2f} (GLUE average over {', '.join(res['tasks'])}; "
             f"{len(res['seeds'])} seed(s))."]
    agree = 0
    for r in res["roles"]:
        g, pg = res["dwt_gain"][r], res["paper"]["dwt_gain"][r]
        same = (g > 0) == (pg > 0)
        agree += same
        parts.append(f"DWT from the {r.replace('_', ' ')} teacher ({res['size_ratio'][r]:.2f}x, teacher "
                     f"{res['teacher_gap'][r]:+.2f} vs. the student) changes the student by {g:+.2f} "
                     f"(paper: {pg:+.2f}; {'same sign' if same else 'opposite sign'}).")
    spread = max((s["std"] for s in res["scores"]), default=0.0)
    parts.append(f"{agree} of {len(res['roles'])} gains have the paper's sign; the largest seed spread of a "
                 f"task score is {spread:.2f}, so differences smaller than that are not resolved by this run.")
    return " ".join(parts)


# ----------------------------------------------------------------------------- Fig. 3 and 4

def over_training(cfg: Config, study: str, progress: bool = True) -> dict:
    """Soft-weight (Fig. 3) or parameter-remapping (Fig. 4) study: fine-tune every snapshot of the
    study's runs on the study tasks; keep the pre-training loss curves. Writes ``results/<study>.json``."""
    names = study_runs(cfg, study)
    runs = {n: _pretrain_summary(cfg, n) for n in names}
    tasks = [t for t in cfg.studies.soft_weight_tasks if t in cfg.finetune.tasks] or list(cfg.finetune.tasks)
    fractions = sorted(cfg.pretrain.snapshot_fractions)
    scores = _task_scores(study_scores(cfg, names, tasks, fractions, progress))
    payload = {"study": study, "tasks": tasks, "fractions": fractions, "seeds": list(cfg.finetune.seeds),
               "runs": runs, "scores": scores, "logs": {n: read_log(cfg, n) for n in names}}
    if study == "soft_weight":
        payload["schedules"] = {n: cfg.studies.soft_weight[n[5:]] for n in names}
    if study == "param_remap":
        payload["remap_check"] = remap_check(cfg, f"remap-{cfg.studies.param_remap_teacher}")
    return write_result(result_path(cfg, study), cfg, payload)


def remap_check(cfg: Config, name: str) -> dict:
    """Compare the remapped student's initial weights (``init/``) with the teacher, key by key,
    as the run's remap report says they were copied."""
    import torch
    from safetensors.torch import load_file
    run = named_run(cfg, name)
    report = read_json(run.dir / "remap_report.json")
    teacher_dir = run.root / "runs" / run.key["teacher"] / "model"
    init = load_file(str(run.dir / "init" / "model.safetensors"))
    teacher = load_file(str(teacher_dir / "model.safetensors"))
    sources = report["sources"]
    copied = {k: v for k, v in sources.items() if v != "random"}
    # Tied aliases (decoder = word embeddings) and non-persistent buffers are not in the saved files.
    compared = {k: v for k, v in copied.items() if k in init and v in teacher}
    equal = sum(1 for k, v in compared.items() if torch.equal(init[k], teacher[v]))
    return {"copied": len(copied), "compared": len(compared), "copied_and_equal": equal,
            "not_in_saved_files": sorted(set(copied) - set(compared)),
            "random": sum(1 for v in sources.values() if v == "random"),
            "layer_sources": sorted({(k.split(".")[3], v.split(".")[3]) for k, v in copied.items()
                                     if ".encoder.layer." in k})}


def over_training_table(res: dict):
    """Wide table: one row per (run, fraction), one column per task (mean over seeds)."""
    import pandas as pd
    df = pd.DataFrame(res["scores"])
    return df.pivot_table(index=["run", "fraction"], columns="task", values="mean").round(2)


def over_training_summary(res: dict) -> str:
    """One paragraph from the numbers: which run leads early and at the end, per task, and the losses."""
    import pandas as pd
    df = pd.DataFrame(res["scores"])
    first, last = min(res["fractions"]), max(res["fractions"])
    lines = []
    for frac, when in ((first, "earliest snapshot"), (last, "end")):
        m = df[df.fraction == frac].groupby("run")["mean"].mean()
        lines.append(f"at the {when} ({frac:.0%} of pre-training) the best mean task score is "
                     f"{m.idxmax()} ({m.max():.2f}; others: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != m.idxmax()) + ")")
    losses = ", ".join(f"{n} {r['mlm_loss']:.3f}" for n, r in res["runs"].items())
    spread = df["std"].max()
    text = (f"Over {', '.join(res['tasks'])} with {len(res['seeds'])} seed(s): " + "; ".join(lines)
            + f". Final held-out MLM loss: {losses}. The largest seed spread is {spread:.2f}.")
    if res["study"] == "soft_weight":
        text += (" The paper found Strong (a_s = 4) ahead early and Normal (a_s = 1) ahead at the end; "
                 "compare the two sentences above with that.")
    else:
        rc = res.get("remap_check", {})
        text += (f" The paper found remapping (PR O) worse than random initialisation (PR X) throughout. "
                 f"Remap check: {rc.get('copied_and_equal')} of {rc.get('compared')} copied tensors equal "
                 f"the teacher's at initialisation.")
    return text
