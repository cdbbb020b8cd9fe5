"""The three studies' result files, built by running (or reusing) their runs, and their summaries.

Each study writes ``outputs/<profile>/results/<study>.json``: the numbers its figure is drawn
from, with the resolved config, its hash, the git commit and versions (:func:`runs.write_result`).
Figures (:mod:`dwt_lib.notebook.plots`) read only these files. Summaries are generated from the numbers,
so a rerun that contradicts the paper says so.
"""
from __future__ import annotations

import re
from pathlib import Path

from dwt_lib.studies import preflight, reference, spread
from dwt_lib.config.schema import Config
from dwt_lib.data.glue import glue_average
from dwt_lib.studies.premise import premise_check  # noqa: F401  (re-exported: the summary's first sentence)
from dwt_lib.runs.registry import outputs_dir, read_json, write_result
from dwt_lib.runs.registry import read_log as read_log_file
from dwt_lib.studies.identity import (ensure_pretrained, named_run, pretrain_seed, seed_runs, selected_lrs, study_runs, study_scores, with_lrs)
from dwt_lib.config.arms import NO_PRETRAINING, split_seed
from dwt_lib.config.tasks import average_tasks
from dwt_lib.studies.text import md_table

# A layer index in a state-dict name of either architecture (bert.encoder.layer.3. / model.layers.3.).
_LAYER_INDEX = re.compile(r"(?:encoder\.layer|layers)\.(\d+)\.")

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
            "tokens_seen": res.get("tokens_seen"), "steps": res.get("steps"),
            "train_time_s": res.get("train_time_s", res["provenance"]["wall_time_s"])}


def _arm_summary(cfg: Config, name: str) -> dict:
    """An arm over its pre-training seeds (:func:`~dwt_lib.studies.seed_runs`): the first seed's run
    summary, with MLM loss and accuracy replaced by their means over seeds and the seeds' values kept."""
    names = seed_runs(cfg, name)
    each = [_pretrain_summary(cfg, n) for n in names]
    out = dict(each[0], pretrain_seeds=[pretrain_seed(cfg, n) for n in names], seed_run_ids=[e["id"] for e in each])
    for k in ("mlm_loss", "mlm_accuracy"):
        vals = [e[k] for e in each]
        out.update({k: sum(vals) / len(vals), f"{k}_seeds": vals, f"{k}_spread": spread.seed_spread(vals)})
    return out


def seed_design(res: dict, runs=None) -> str:
    """The seeds behind the scores, from the result file: "3 fine-tuning × 2 pre-training seeds", or, where
    arms differ, "3 fine-tuning seeds × pre-training seeds: 2 for student, dwt-weak; 1 for the others"."""
    runs = list(runs if runs is not None else res["runs"])
    by = res.get("pretrain_seeds") if isinstance(res.get("pretrain_seeds"), dict) else {}
    n_pt = {n: len(by.get(n) or (res["runs"].get(n) or {}).get("pretrain_seeds") or [None]) for n in runs}
    n_ft = len(res.get("seeds") or [None])
    counts = sorted(set(n_pt.values()), reverse=True)
    if len(counts) <= 1:
        k = counts[0] if counts else 1
        return f"{n_ft} fine-tuning × {k} pre-training seed{'s' * (k > 1)}"
    parts = [f"{k} for {', '.join(n for n in runs if n_pt[n] == k)}" for k in counts[:-1]]
    return f"{n_ft} fine-tuning seeds × pre-training seeds: " + "; ".join(parts) + f"; {counts[-1]} for the others"

def _task_scores(ft: list[dict]) -> list[dict]:
    """Per (arm, fraction, task): the mean over every (pre-training, fine-tuning) seed pair; ``std`` over
    fine-tuning seeds (of their means over pre-training seeds) and ``std_pretrain`` over pre-training seeds
    (None with one); the pairs' ``scores`` with parallel ``pretrain_seeds`` and ``finetune_seeds``."""
    import pandas as pd
    df = pd.DataFrame([{"run": split_seed(r["pretrain_run"])[0], "fraction": r["fraction"], "task": r["task"],
                        "pretrain_seed": r.get("pretrain_seed", 0), "seed": r["seed"], "score": r["score"],
                        "majority_baseline": r.get("majority_baseline")} for r in ft])
    out = []
    for (run, fraction, task), g in df.groupby(["run", "fraction", "task"], sort=False):
        g = g.sort_values(["pretrain_seed", "seed"])
        by_ft, by_pt = g.groupby("seed")["score"].mean(), g.groupby("pretrain_seed")["score"].mean()
        sd_pt = spread.seed_spread(by_pt.tolist())
        out.append({"run": run, "fraction": fraction, "task": task, "mean": float(g["score"].mean()),
                    "std": float(by_ft.std()) if len(by_ft) > 1 else 0.0, "count": len(by_ft),
                    "std_pretrain": None if sd_pt != sd_pt else sd_pt, "n_pretrain_seeds": len(by_pt),
                    "scores": g["score"].tolist(), "pretrain_seeds": g["pretrain_seed"].tolist(),
                    "finetune_seeds": g["seed"].tolist(), "majority_baseline": g["majority_baseline"].mean()})
    return out


def _arm_seed_averages(scores: list[dict], run: str, fraction: float = 1.0,
                       tasks=None) -> tuple[list[float], list[float]]:
    """An arm's scores averaged over ``tasks`` (default: the GLUE average's, :func:`average_tasks`) per
    fine-tuning seed and per pre-training seed (for :mod:`spread`)."""
    tasks = average_tasks(sorted({s["task"] for s in scores}))[0] if tasks is None else tasks
    _, m = spread.seed_matrix([s for s in scores if s["run"] == run and s["fraction"] == fraction
                               and s["task"] in tasks])
    return m.mean(axis=0).tolist(), m.mean(axis=1).tolist()


def eval_curve(cfg: Config, name: str) -> list[dict]:
    """Held-out MLM loss and accuracy against tokens seen, from a finished run's log."""
    res = ensure_pretrained(cfg, name)
    per_step = res["tokens_seen"] / max(res["steps"], 1)
    return [{"step": r["step"], "tokens": r["step"] * per_step, "mlm_loss": r["eval_mlm_loss"],
             "mlm_accuracy": r["eval_mlm_accuracy"]} for r in read_log(cfg, name) if "eval_mlm_loss" in r]


def read_log(cfg: Config, name: str) -> list[dict]:
    """The JSON-lines training log of a pre-training run."""
    return read_log_file(named_run(cfg, name).dir / "log.jsonl")


# ----------------------------------------------------------------------------- Fig. 2

def teacher_quality(cfg: Config, progress: bool = True) -> dict:
    """Teacher-quality study (paper Fig. 2): pre-train teachers, standalone and DWT students,
    fine-tune each on the profile's tasks, and write ``results/teacher_quality.json``."""
    names = study_runs(cfg, "teacher_quality")
    all_runs = [r for n in names for r in seed_runs(cfg, n)]
    preflight.check(cfg, all_runs, list(cfg.finetune.tasks), [1.0])       # before any training step
    runs = {n: _arm_summary(cfg, n) for n in names}
    tasks = list(cfg.finetune.tasks)
    lrs = selected_lrs(cfg, tasks, progress)                              # finetune.lr_grid, on the student
    scores = _task_scores(study_scores(with_lrs(cfg, lrs), all_runs, tasks, (1.0,), progress))
    avg_tasks, other_tasks = average_tasks(tasks)
    for n in names:
        per_task = {s["task"]: s["mean"] for s in scores if s["run"] == n}
        runs[n]["glue_avg"] = glue_average({t: per_task[t] for t in avg_tasks})
        runs[n]["glue_avg_per_seed"], runs[n]["glue_avg_per_pretrain_seed"] = _arm_seed_averages(scores, n)
        runs[n]["per_task"] = per_task
    base = runs["student"]["glue_avg"]
    roles = list(cfg.studies.teacher_quality)
    seeds = lambda n: (runs[n]["glue_avg_per_seed"], runs[n]["glue_avg_per_pretrain_seed"])  # noqa: E731
    gain = {r: spread.compare(seeds(f"dwt-{r}"), seeds("student")) for r in roles}
    payload = {
        "study": "teacher_quality", "tasks": tasks, "average_tasks": avg_tasks, "other_tasks": other_tasks,
        "seeds": list(cfg.finetune.seeds), "runs": runs,
        "pretrain_seeds": {n: runs[n]["pretrain_seeds"] for n in names},
        "scores": scores, "roles": roles,
        "dwt_gain": {r: runs[f"dwt-{r}"]["glue_avg"] - base for r in roles},
        "dwt_gain_se": {r: gain[r]["se_finetune"] for r in roles},
        "dwt_gain_compare": gain,
        "teacher_gap": {r: runs[f"teacher-{r}"]["glue_avg"] - base for r in roles},
        "teacher_gap_compare": {r: spread.compare(seeds(f"teacher-{r}"), seeds("student")) for r in roles},
        "curves": {r: eval_curve(cfg, r) for n in ["student"] + [f"teacher-{x}" for x in roles]
                   for r in seed_runs(cfg, n)},
        "size_ratio": {r: runs[f"teacher-{r}"]["params"] / runs["student"]["params"] for r in roles},
        "pretraining_gain": spread.compare(seeds("student"), seeds(NO_PRETRAINING)),
        "reference": reference.mlm_reference(cfg),       # ln V and the unigram cross-entropy: the MLM plots' levels
        "paper": PAPER_FIG2,
        "lr_selection": lrs,
    }
    payload["selection_bias"] = selection_bias(payload)
    return write_result(result_path(cfg, "teacher_quality"), cfg, payload)


def _without_seed(score: dict, seed: int) -> dict:
    """A ``_task_scores`` row without one fine-tuning seed's scores."""
    keep = [i for i, f in enumerate(score["finetune_seeds"]) if f != seed]
    return dict(score, **{k: [score[k][i] for i in keep] for k in ("scores", "pretrain_seeds", "finetune_seeds")})


def selection_bias(res: dict) -> dict:
    """The learning rate of each task is chosen on the standalone student's first fine-tuning seed, whose validation
    score is then reported with the others: a winner's curse in the student's favour (against DWT). Measured: every
    DWT change recomputed without that seed (``gains``: all seeds, without it, the shift), and the student's score on
    that seed against its other seeds. Empty without an lr grid or with one fine-tuning seed."""
    sel = res.get("lr_selection") or {}
    seeds = res["seeds"]
    if not sel or len(seeds) < 2:
        return {}
    seed = next(iter(sel.values()))["seed"]
    rest = [_without_seed(s, seed) for s in res["scores"]]
    avg = lambda sc, run: _arm_seed_averages(sc, run, 1.0, res.get("average_tasks"))  # noqa: E731
    gains = {}
    for r in res["roles"]:
        without = spread.compare(avg(rest, f"dwt-{r}"), avg(rest, "student"))["diff"]
        gains[r] = {"all_seeds": res["dwt_gain"][r], "without_selection_seed": without,
                    "shift": without - res["dwt_gain"][r]}
    per_seed = dict(zip(sorted(seeds), avg(res["scores"], "student")[0]))    # seed_matrix's column order
    others = [v for f, v in per_seed.items() if f != seed]
    return {"seed": seed, "tasks": sorted(sel), "gains": gains, "student_selection_seed": per_seed[seed],
            "student_other_seeds": sum(others) / len(others)}


def task_differences(res: dict, pairs: list[tuple[str, str]], fraction: float = 1.0):
    """Per task, each difference ``a - b`` of mean scores with the larger of its two standard errors (fine-tuning
    and pre-training seeds, :func:`spread.compare`); ``*`` marks a resolved one. Tasks outside the GLUE average are
    labelled so. Rows: tasks, then the average; one column per pair."""
    import pandas as pd
    avg_tasks = res.get("average_tasks") or res["tasks"]
    rows = []

    def cell(sa, sb):
        c = spread.compare(sa, sb)
        return f"{c['diff'] + 0.0:+.2f} ± {spread.se_text(c)}" + (" *" if c["resolved"] else "")
    for t in list(res["tasks"]) + ["average"]:
        tasks = avg_tasks if t == "average" else [t]
        label = (f"average ({', '.join(avg_tasks)})" if t == "average"
                 else t + ("" if t in avg_tasks else " (not in the average)"))
        rows.append({"task": label, **{f"{a} − {b}": cell(_arm_seed_averages(res["scores"], a, fraction, tasks),
                                                           _arm_seed_averages(res["scores"], b, fraction, tasks))
                                       for a, b in pairs}})
    return pd.DataFrame(rows).set_index("task")


def teacher_quality_table(res: dict):
    """Per-task scores (mean ± std over fine-tuning seeds) of every arm, with the GLUE average, its spread
    over fine-tuning seeds and over pre-training seeds (sample std; empty with one seed), and the paper's."""
    import pandas as pd
    rows = []
    for name, r in res["runs"].items():
        row = {"run": name, "params (M)": r["params"] / 1e6, "MLM loss": r["mlm_loss"],
               "pre-training seeds": len(r.get("pretrain_seeds", [None]))}
        for s in res["scores"]:
            if s["run"] == name:
                row[s["task"]] = f"{s['mean']:.1f} ± {s['std']:.1f}" if s["count"] > 1 else f"{s['mean']:.1f}"
        row["GLUE avg"] = r["glue_avg"]
        row["sd (fine-tuning seeds)"] = spread.seed_spread(r.get("glue_avg_per_seed", []))
        row["sd (pre-training seeds)"] = spread.seed_spread(r.get("glue_avg_per_pretrain_seed", []))
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


def collapsed(scores: list[dict], margin: float = 2.0) -> str:
    """A sentence naming the fine-tuning runs that fell to the majority class (within 0.5 points of its baseline)
    while most runs of the same model and task beat it by more than ``margin``: a diverged run, not a score, that
    pulls its mean and inflates its standard error. Where most runs sit at the baseline, none is named (that task
    is at chance, which :func:`chance_check` says). Empty when there is none."""
    out = []
    for s in scores:
        base = s.get("majority_baseline") or 0.0
        low = [i for i, v in enumerate(s["scores"]) if v <= base + 0.5]
        rest = [v for i, v in enumerate(s["scores"]) if i not in low]
        if low and 2 * len(low) < len(s["scores"]) and min(rest) > base + margin:
            pts = s.get("pretrain_seeds") or [None] * len(s["scores"])
            many = len(set(pts)) > 1
            out += [f"{s['run']}{f':s{pts[i]}' if many else ''}@{s['fraction']:.0%} {s['task']} fine-tuning seed "
                    f"{s['finetune_seeds'][i]} ({s['scores'][i]:.1f} vs {min(rest):.1f}-{max(rest):.1f})" for i in low]
    if len(out) > 1:                        # a summary names one (its prose stays within ~80 words); the
        out = out[:1] + [f"{len(out) - 1} more"]   # per-seed tables hold every seed
    return ("Majority-class collapses: " + ", ".join(out) + ".") if out else ""


def chance_check(scores: list[dict], margin: float = 2.0) -> str:
    """A sentence naming the tasks on which no model beats the majority-class baseline (chance; 0 for
    correlations) by ``margin`` points; empty when every task has one."""
    dead = baseline_tasks(scores, margin)
    return (f"No model beats the majority-class baseline by {margin:g} points on {', '.join(dead)}: differences "
            f"there are noise." if dead else "")


def teacher_quality_summary(res: dict) -> str:
    """A headline and a table, generated from the numbers: this run's DWT changes against the paper's, with the
    controls (pre-training against none, the lr selection's bias, the tasks averaged) in a few short sentences."""
    roles = res["roles"]
    cmp = {r: res.get("dwt_gain_compare", {}).get(r) or {   # result files from before pre-training seeds
        "diff": res["dwt_gain"][r], "se_finetune": res["dwt_gain_se"][r], "se_pretrain": float("nan"),
        "resolved": False} for r in roles}
    same = {r: (res["dwt_gain"][r] > 0) == (res["paper"]["dwt_gain"][r] > 0) and res["dwt_gain"][r] != 0 for r in roles}
    head = ("**DWT changed the standalone student by " + " / ".join(f"{res['dwt_gain'][r]:+.2f}" for r in roles)
            + " GLUE points (" + " / ".join(r.replace("_", " ") for r in roles) + " teacher; the paper: "
            + " / ".join(f"{res['paper']['dwt_gain'][r]:+.2f}" for r in roles) + f"): {sum(same.values())} of "
            f"{len(roles)} with the paper's sign, {sum(same[r] and cmp[r]['resolved'] for r in roles)} of those "
            f"resolved.**")
    avg, other = res.get("average_tasks") or res["tasks"], res.get("other_tasks") or []
    design = (f"teacher ({seed_design(res)}; GLUE average of {', '.join(avg)}"
              + (f", the paper's set: {', '.join(other)} per task only" if other else "") + ")")
    sb = res.get("selection_bias") or {}
    header = [design, "size", "teacher − student", "DWT − student", "± SE (larger)", "resolved", "paper"]
    header += [f"DWT − student without seed {sb['seed']} (the lr-selection seed)"] if sb else []
    table = md_table(header, [[r.replace("_", " "), f"{res['size_ratio'][r]:.2f}x", f"{res['teacher_gap'][r]:+.2f}",
                               f"{cmp[r]['diff']:+.2f}", spread.se_text(cmp[r]), "yes" if cmp[r]["resolved"] else "no",
                               f"{res['paper']['dwt_gain'][r]:+.2f}"]
                              + ([f"{sb['gains'][r]['without_selection_seed']:+.2f}"] if sb else []) for r in roles])
    notes = []
    pg = res.get("pretraining_gain")
    if pg:
        notes.append(f"Student − random-init (no pre-training): {pg['diff'] + 0.0:+.2f} "
                     f"({'resolved' if pg['resolved'] else 'not resolved'}).")
    if "teacher_gap_compare" in res:
        e = evaluation_check(res)
        smallest = min(roles, key=lambda r: res["size_ratio"][r]).replace("_", " ")
        n = len(res["tasks"])
        notes.append(f"Student above the majority baseline on {n - len(e['tasks_below_baseline'])} of {n} tasks; "
                     f"lead over the {smallest} teacher {e['lead_over_smallest_teacher']:+.2f} "
                     f"({'resolved' if e['compare']['resolved'] else 'not resolved'}).")
    else:
        notes.append(chance_check([s for s in res["scores"] if s["task"] in avg]))
    notes.append(collapsed(res["scores"]))
    return head + "\n\n" + table + "\n\n" + " ".join(n for n in notes if n)


def evaluation_check(res: dict) -> dict:
    """Can this evaluation resolve the paper's effects? From a teacher-quality result: the tasks on which the
    standalone student's mean beats its majority-class baseline, and whether its GLUE average exceeds the
    smallest teacher's by more than twice the larger standard error (:func:`spread.resolved`). ``ok`` when
    the student beats the baseline on every task but at most one and that gap is resolved."""
    st = {s["task"]: s for s in res["scores"] if s["run"] == "student" and s["fraction"] == 1.0}
    below = sorted(t for t, s in st.items() if not s["mean"] > (s.get("majority_baseline") or 0.0))
    smallest = min(res["roles"], key=lambda r: res["size_ratio"][r])
    cmp = res["teacher_gap_compare"][smallest]
    lead = -cmp["diff"]                                          # student minus teacher
    gap_ok = lead > 0 and cmp["resolved"]
    ok = len(below) <= 1 and gap_ok
    text = (f"Resolving power: the standalone student beats the majority-class baseline on "
            f"{len(st) - len(below)} of {len(st)} tasks" + (f" (not on {', '.join(below)})" if below else "")
            + f", and its GLUE average is {lead:+.2f} against the {smallest.replace('_', ' ')} teacher's "
            f"({cmp['verdict']}): this evaluation {'can' if ok else 'cannot'} resolve differences of that size"
            + ("." if ok else " (the aim: above the baseline on all tasks but at most one, and that gap resolved)."))
    return {"tasks_below_baseline": below, "lead_over_smallest_teacher": lead, "compare": cmp, "ok": ok,
            "text": text}


# ----------------------------------------------------------------------------- Fig. 3 and 4

def snapshot_scores(cfg: Config, names: list[str], progress: bool = True) -> dict:
    """Train (or reuse) ``names`` and every pre-training seed of them, fine-tune each snapshot on the study
    tasks (``studies.soft_weight_tasks``), lrs chosen as :func:`teacher_quality` chooses them. The common part
    of the over-training studies' result files: ``tasks``, ``fractions``, ``seeds``, ``runs`` (summaries),
    ``scores`` (per arm, fraction, task), ``logs``, ``lr_selection``."""
    tasks = [t for t in cfg.studies.soft_weight_tasks if t in cfg.finetune.tasks] or list(cfg.finetune.tasks)
    fractions = sorted(cfg.pretrain.snapshot_fractions)
    all_runs = [r for n in names for r in seed_runs(cfg, n)]
    preflight.check(cfg, all_runs, tasks, fractions)                      # before any training step
    runs = {n: _arm_summary(cfg, n) for n in names}
    lrs = selected_lrs(cfg, tasks, progress)
    scores = _task_scores(study_scores(with_lrs(cfg, lrs), all_runs, tasks, fractions, progress))
    return {"tasks": tasks, "fractions": fractions, "seeds": list(cfg.finetune.seeds), "runs": runs,
            "scores": scores, "logs": {n: read_log(cfg, n) for n in names}, "lr_selection": lrs,
            "reference": reference.mlm_reference(cfg)}


def over_training(cfg: Config, study: str, progress: bool = True) -> dict:
    """Soft-weight (Fig. 3) or parameter-remapping (Fig. 4) study: fine-tune every snapshot of the
    study's runs on the study tasks; keep the pre-training loss curves. Writes ``results/<study>.json``."""
    names = study_runs(cfg, study)
    payload = {"study": study, **snapshot_scores(cfg, names, progress)}
    if study == "soft_weight":
        payload["schedules"] = {n: cfg.studies.soft_weight[n[5:]] for n in names}
    if study == "param_remap":
        payload["remap_check"] = remap_check(cfg, f"remap-{cfg.studies.param_remap_teacher}")
        payload["teacher"] = _pretrain_summary(cfg, f"teacher-{cfg.studies.param_remap_teacher}")
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
            "layer_sources": sorted({(a[0], b[0]) for k, v in copied.items()
                                     if (a := _LAYER_INDEX.findall(k)) and (b := _LAYER_INDEX.findall(v))})}


def over_training_table(res: dict):
    """Wide table: one row per (run, fraction), one column per task (mean over seeds)."""
    import pandas as pd
    df = pd.DataFrame(res["scores"])
    return df.pivot_table(index=["run", "fraction"], columns="task", values="mean").round(2)


def _run_means(scores: list[dict], frac: float) -> tuple[dict, dict]:
    """Per arm at one snapshot: mean task score, and its (per-fine-tuning-seed, per-pre-training-seed)
    task averages (:func:`spread.compare`'s input)."""
    arms = dict.fromkeys(s["run"] for s in scores if s["fraction"] == frac)
    per_seed = {run: _arm_seed_averages(scores, run, frac) for run in arms}
    return {run: sum(v[0]) / len(v[0]) for run, v in per_seed.items()}, per_seed


def over_training_comparisons(res: dict) -> list[dict]:
    """The differences an over-training study is about, each ``{"a", "b", "fraction", **spread.compare}``
    (a - b): soft weight: Strong - Normal at the first snapshot, Normal - Strong and Decay - Normal at the
    last (the paper's claims); remapping: random init - remapped at the first and last snapshot."""
    first, last = min(res["fractions"]), max(res["fractions"])
    ps = {first: _run_means(res["scores"], first)[1], last: _run_means(res["scores"], last)[1]}
    arms = set(ps[last])
    pairs = []
    if res["study"] == "soft_weight" and {"soft-normal", "soft-strong"} <= arms:
        pairs = [("soft-strong", "soft-normal", first), ("soft-normal", "soft-strong", last)]
        pairs += [("soft-decay", "soft-normal", last)] if "soft-decay" in arms else []
    elif res["study"] == "param_remap":
        pro = next(r for r in ps[last] if r.startswith("remap-"))
        prx = next(r for r in ps[last] if not r.startswith("remap-"))
        pairs = [(prx, pro, first), (prx, pro, last)]
    return [{"a": a, "b": b, "fraction": f, **spread.compare(ps[f][a], ps[f][b])} for a, b, f in pairs]


def over_training_summary(res: dict) -> str:
    """A headline and a table from the numbers: the paper's claim for this study against what this run measured."""
    first, last = min(res["fractions"]), max(res["fractions"])
    m0, m1 = _run_means(res["scores"], first)[0], _run_means(res["scores"], last)[0]
    c = over_training_comparisons(res)
    avg = average_tasks(res["tasks"])[0]
    verdict = lambda x: "resolved" if x["resolved"] else "not resolved"  # noqa: E731
    if res["study"] == "soft_weight" and c:
        head = (f"**Strong − Normal: {c[0]['diff'] + 0.0:+.2f} at {first:.0%} of pre-training, "
                f"{-c[1]['diff'] + 0.0:+.2f} at {last:.0%} ({verdict(c[0])}, {verdict(c[1])}); the paper: Strong ahead "
                f"early, Normal ahead at the end.**")
        extra = [f"Decay 4 → 1 − Normal at the end: {c[2]['diff'] + 0.0:+.2f} ({verdict(c[2])})."] if len(c) > 2 else []
        col = ("a_s", lambda n: _schedule_words(res.get("schedules", {}).get(n)))
    elif res["study"] == "param_remap" and c:
        head = (f"**Random init (PR X) − remapped (PR O): {c[0]['diff'] + 0.0:+.2f} at {first:.0%}, {c[1]['diff'] + 0.0:+.2f} at "
                f"{last:.0%} ({verdict(c[1])} at the end); the paper: random init ahead throughout.**")
        rc, t = res.get("remap_check", {}), res.get("teacher") or {}
        extra = [f"Remap check: {rc.get('copied_and_equal')} of {rc.get('compared')} copied tensors equal the "
                 f"teacher's at step 0."]
        if t.get("tokens_seen"):
            extra.append(f"PR O also carries the {t['run']}'s pre-training ({t['tokens_seen'] / 1e6:.2f}M tokens, "
                         f"{t['train_time_s']:.0f} s here) that PR X never had.")
        col = ("init", lambda n: "remapped" if n.startswith("remap-") else "random")
    else:
        head, extra, col = "", [], ("", lambda n: "")
    table = md_table([f"run (mean over {', '.join(avg)}; {seed_design(res)})", col[0], f"score at {first:.0%}",
                      f"at {last:.0%}", "final MLM loss"],
                     [[n, col[1](n), f"{m0[n]:.2f}", f"{m1[n]:.2f}", f"{r['mlm_loss']:.3f}"]
                      for n, r in res["runs"].items() if n in m1])
    return (head + "\n\n" + table + "\n\n"
            + " ".join(t for t in extra + [collapsed(res["scores"]),
                                           chance_check([s for s in res["scores"] if s["task"] in avg])] if t))


def _schedule_words(spec) -> str:
    """A soft-weight schedule in a table cell: ``1``, ``4``, ``4 → 1``."""
    if not spec:
        return ""
    if spec.get("kind") == "constant":
        return f"{spec['value']:g}"
    if "start" in spec and "end" in spec:
        return f"{spec['start']:g} → {spec['end']:g} ({spec['kind']})"
    return spec.get("kind", "")
