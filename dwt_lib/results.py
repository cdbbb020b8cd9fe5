"""The three studies' result files, built by running (or reusing) their runs, and their summaries.

Each study writes ``outputs/<profile>/results/<study>.json``: the numbers its figure is drawn
from, with the resolved config, its hash, the git commit and versions (:func:`runs.write_result`).
Figures (:mod:`dwt_lib.plots`) read only these files. Summaries are generated from the numbers,
so a rerun that contradicts the paper says so.
"""
from __future__ import annotations

import json
from pathlib import Path

from . import preflight
from .config import Config
from .glue import glue_average
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
            "train_time_s": res.get("train_time_s", res["provenance"]["wall_time_s"])}


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
    preflight.check(cfg, names, list(cfg.finetune.tasks), [1.0])       # before any training step
    runs = {n: _pretrain_summary(cfg, n) for n in names}
    tasks = list(cfg.finetune.tasks)
    scores = _task_scores(study_scores(cfg, names, tasks, (1.0,), progress))
    for n in names:
        per_task = {s["task"]: s["mean"] for s in scores if s["run"] == n}
        runs[n]["glue_avg"] = glue_average(per_task)
        runs[n]["glue_avg_per_seed"] = _per_seed_average([s for s in scores if s["run"] == n])
        runs[n]["per_task"] = per_task
    base = runs["student"]["glue_avg"]
    roles = list(cfg.studies.teacher_quality)
    payload = {
        "study": "teacher_quality", "tasks": tasks, "seeds": list(cfg.finetune.seeds), "runs": runs,
        "scores": scores, "roles": roles,
        "dwt_gain": {r: runs[f"dwt-{r}"]["glue_avg"] - base for r in roles},
        "dwt_gain_se": {r: _diff_se(runs[f"dwt-{r}"]["glue_avg_per_seed"], runs["student"]["glue_avg_per_seed"])
                        for r in roles},
        "teacher_gap": {r: runs[f"teacher-{r}"]["glue_avg"] - base for r in roles},
        "size_ratio": {r: runs[f"teacher-{r}"]["params"] / runs["student"]["params"] for r in roles},
        "paper": PAPER_FIG2,
    }
    return write_result(result_path(cfg, "teacher_quality"), cfg, payload)


def _per_seed_average(task_scores: list[dict]) -> list[float]:
    """The GLUE average of each fine-tuning seed (tasks averaged per seed)."""
    import numpy as np
    return np.mean([s["scores"] for s in task_scores], axis=0).tolist() if task_scores else []


def _diff_se(a: list[float], b: list[float]) -> float:
    """Standard error of mean(a) - mean(b) over fine-tuning seeds (nan with one seed)."""
    import numpy as np
    if min(len(a), len(b)) < 2:
        return float("nan")
    return float(np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b)))


def _verdict(diff: float, se: float) -> str:
    if se != se:           # nan: one seed
        return "one seed, so no error bar"
    if se == 0:            # every seed scored the same (e.g. all at the majority baseline)
        return "the seeds agree exactly, so no error bar"
    return (f"{abs(diff) / se:.1f} standard errors, " +
            ("resolved" if abs(diff) > 2 * se else "not resolved at 2 standard errors"))


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


def baseline_tasks(scores: list[dict], margin: float = 2.0) -> list[str]:
    """Tasks on which no run beats the majority-class baseline (chance; 0 for correlations) by ``margin`` points."""
    tasks = sorted({s["task"] for s in scores})
    return [t for t in tasks
            if all(s["mean"] <= (s.get("majority_baseline") or 0.0) + margin for s in scores if s["task"] == t)]


def chance_check(scores: list[dict], margin: float = 2.0) -> str:
    """A sentence on which tasks no run beats the majority-class baseline (chance) by ``margin`` points:
    differences there are differences between degenerate classifiers, not transfer."""
    tasks = sorted({s["task"] for s in scores})
    dead = baseline_tasks(scores, margin)
    if not dead:
        return "Every task has a model above its majority-class baseline."
    return (f"On {', '.join(dead)} ({len(dead)} of {len(tasks)} tasks) no model beats the majority-class baseline "
            f"(constant prediction; 0 for correlations) by {margin:g} points, so differences there are not transfer "
            f"but noise between near-constant classifiers" + (": this run cannot test the paper's claim." if
                                                                 len(dead) * 2 >= len(tasks) else "."))


def premise_check(res: dict) -> str:
    """A sentence on the paper's premise, from the held-out MLM losses: are the teachers ordered by
    size (bigger = better), and is the standalone student better than every teacher?"""
    loss = {r: res["runs"][f"teacher-{r}"]["mlm_loss"] for r in res["roles"]}
    student = res["runs"]["student"]["mlm_loss"]
    by_size = sorted(res["roles"], key=lambda r: -res["size_ratio"][r])
    ordered = all(loss[a] < loss[b] for a, b in zip(by_size, by_size[1:]))
    text = ("Held-out MLM loss after pre-training (lower is better): "
            + ", ".join(f"{r.replace('_', ' ')} teacher {loss[r]:.3f}" for r in by_size)
            + f", standalone student {student:.3f}. ")
    text += ("The teachers are ordered by size, as the paper's premise needs" if ordered else
             "The teachers are not ordered by size, so this run does not have the paper's three teacher qualities")
    weaker = [r for r in by_size if loss[r] > student]
    text += ("; every teacher is weaker than the standalone student." if len(weaker) == len(by_size) else
             f"; {len(by_size) - len(weaker)} of {len(by_size)} teachers are better than the standalone student, "
             "so for those this is not distillation from a weaker model.")
    return text


def teacher_quality_summary(res: dict) -> str:
    """One paragraph, generated from the numbers, comparing this run's gains with the paper's."""
    base = res["runs"]["student"]["glue_avg"]
    parts = [premise_check(res),
             f"The standalone student scores {base:.2f} (GLUE average over {', '.join(res['tasks'])}; "
             f"{len(res['seeds'])} seed(s))."]
    agree = resolved_agree = 0
    for r in res["roles"]:
        g, pg, se = res["dwt_gain"][r], res["paper"]["dwt_gain"][r], res["dwt_gain_se"][r]
        same = (g > 0) == (pg > 0) and g != 0
        agree += same
        resolved_agree += same and se == se and abs(g) > 2 * se
        parts.append(f"DWT from the {r.replace('_', ' ')} teacher ({res['size_ratio'][r]:.2f}x the parameters; "
                     f"the teacher alone scores {res['teacher_gap'][r]:+.2f} vs. the student) changes the student "
                     f"by {g:+.2f} ({_verdict(g, se)}); the paper: {pg:+.2f}, "
                     f"{'same sign' if same else 'not the same sign'}.")
    parts.append(f"In all, {agree} of {len(res['roles'])} changes have the paper's sign and {resolved_agree} of "
                 f"those are larger than twice their standard error over fine-tuning seeds.")
    parts.append(chance_check(res["scores"]))
    return " ".join(parts)


# ----------------------------------------------------------------------------- Fig. 3 and 4

def over_training(cfg: Config, study: str, progress: bool = True) -> dict:
    """Soft-weight (Fig. 3) or parameter-remapping (Fig. 4) study: fine-tune every snapshot of the
    study's runs on the study tasks; keep the pre-training loss curves. Writes ``results/<study>.json``."""
    names = study_runs(cfg, study)
    tasks = [t for t in cfg.studies.soft_weight_tasks if t in cfg.finetune.tasks] or list(cfg.finetune.tasks)
    fractions = sorted(cfg.pretrain.snapshot_fractions)
    preflight.check(cfg, names, tasks, fractions)                         # before any training step
    runs = {n: _pretrain_summary(cfg, n) for n in names}
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


def _run_means(df, frac) -> tuple[dict, dict]:
    """Per run at one snapshot: mean task score, and the per-seed task averages behind it."""
    at = df[df.fraction == frac]
    per_seed = {run: _per_seed_average(g.to_dict("records")) for run, g in at.groupby("run", sort=False)}
    return {run: sum(v) / len(v) for run, v in per_seed.items()}, per_seed


def _compare(a: str, b: str, m: dict, ps: dict) -> str:
    d = m[a] - m[b]
    return f"{a} − {b} = {d:+.2f} ({_verdict(d, _diff_se(ps[a], ps[b]))})"


def over_training_summary(res: dict) -> str:
    """One paragraph from the numbers: the paper's claim for this study, and what this run measured."""
    import pandas as pd
    df = pd.DataFrame(res["scores"])
    first, last = min(res["fractions"]), max(res["fractions"])
    (m0, p0), (m1, p1) = _run_means(df, first), _run_means(df, last)
    head = (f"Mean score over {', '.join(res['tasks'])}, {len(res['seeds'])} fine-tuning seed(s), at "
            f"{first:.0%} and {last:.0%} of pre-training: "
            + "; ".join(f"{r} {m0[r]:.2f} → {m1[r]:.2f}" for r in m1) + ". ")
    losses = "Final held-out MLM loss: " + ", ".join(f"{n} {r['mlm_loss']:.3f}" for n, r in res["runs"].items()) + "."
    if res["study"] == "soft_weight" and {"soft-normal", "soft-strong"} <= set(m1):
        text = (f"The paper: Strong (a_s = 4) ahead early, Normal (a_s = 1) ahead at the end. Here, at {first:.0%}: "
                f"{_compare('soft-strong', 'soft-normal', m0, p0)}; at {last:.0%}: "
                f"{_compare('soft-normal', 'soft-strong', m1, p1)}.")
        if "soft-decay" in m1:
            text += f" The recommended decay 4 → 1 at the end: {_compare('soft-decay', 'soft-normal', m1, p1)}."
    elif res["study"] == "param_remap":
        pro = next(r for r in m1 if r.startswith("remap-"))
        prx = next(r for r in m1 if not r.startswith("remap-"))
        rc = res.get("remap_check", {})
        text = (f"The paper: random initialisation (PR X, {prx}) ahead of remapping (PR O, {pro}) throughout. "
                f"Here, at {first:.0%}: {_compare(prx, pro, m0, p0)}; at {last:.0%}: {_compare(prx, pro, m1, p1)}. "
                f"Remap check: {rc.get('copied_and_equal')} of {rc.get('compared')} copied tensors equal the "
                f"teacher's at initialisation.")
    else:
        text = ""
    return head + text + " " + losses + " " + chance_check(res["scores"])
