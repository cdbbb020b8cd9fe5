"""Notebook 06's study: every ``studies.beyond`` arm and the runs it is compared with, fine-tuned at every
snapshot; comparisons with both spreads (:mod:`dwt_lib.studies.spread`) and one generated paragraph per question.

Writes ``outputs/<profile>/results/beyond.json`` (:func:`runs.write_result`: config, hash, commit,
versions); :func:`dwt_lib.notebook.plots.beyond` draws from it. The runs of notebooks 03-05 that the arms are
compared with (``against``) come from the registry, trained only if missing.
"""
from __future__ import annotations

from dwt_lib.studies import spread
from dwt_lib.config.arms import QUESTIONS, run_name
from dwt_lib.config.schema import Config
from dwt_lib.studies.results import _arm_seed_averages, chance_check, result_path, said, snapshot_scores
from dwt_lib.runs.registry import read_json_or_none, write_result
from dwt_lib.studies.identity import ensure_pretrained, named_run, study_runs

TITLES = {
    "soft_weight": "Soft-weight schedules: teacher-aware and Knowledge-Inheritance decay",
    "temperature": "Temperature 2 for weak teachers",
    "teacher_free": "Teacher-free control: label-smoothed targets instead of the weak teacher",
    "growth": "Function-preserving growth vs remapping vs random initialisation",
}

#: What the paper says on each question (it ran none of these arms), shown beside our numbers.
PAPER = {
    "soft_weight": "The paper recommends decaying a_s from 4 to 1 (Sec. 3.2) without running it (notebook 04 "
                   "runs it: soft-decay); a teacher-aware weight and Knowledge Inheritance's decay to 0 (Qin et al., "
                   "2022) were never run with a weak teacher: new, no paper number.",
    "temperature": "The paper suggests a higher temperature for the weakest teachers (Sec. 5, Limitations) and "
                   "reports no run: new, no paper number.",
    "teacher_free": "The paper credits DWT's success in vision to regularisation (Yuan et al., 2020) without "
                    "separating regularisation from knowledge in NLP: new, no paper number.",
    "growth": "The paper finds remapping hurts DWT (Fig. 4: random initialisation ahead throughout) and tries no "
              "function-preserving initialisation: growth is new, no paper number.",
}


def run_study(cfg: Config, progress: bool = True) -> dict:
    """Train (or reuse) every arm and the runs it is compared with, fine-tune each snapshot on the study tasks
    (``studies.soft_weight_tasks``, as notebooks 04-05), and write ``results/beyond.json``."""
    names = study_runs(cfg, "beyond")
    common = snapshot_scores(cfg, names, progress)
    fractions, scores = common["fractions"], common["scores"]
    seeds = {(n, f): _arm_seed_averages(scores, n, f) for n in names for f in fractions}
    questions = {}
    for arm, spec in cfg.studies.beyond.items():
        q = questions.setdefault(spec["question"], {"arms": [], "runs": [], "comparisons": []})
        name = run_name(arm)
        q["arms"].append(name)
        q["runs"] = list(dict.fromkeys(q["runs"] + [name] + list(spec["against"])))
        for other in spec["against"]:
            for f in dict.fromkeys([fractions[0], fractions[-1]]):
                q["comparisons"].append({"a": name, "b": other, "fraction": f,
                                         **spread.compare(seeds[(name, f)], seeds[(other, f)])})
    by_fraction = {n: [{"fraction": f, "mean": sum(seeds[(n, f)][0]) / len(seeds[(n, f)][0]),
                        "lo": min(seeds[(n, f)][0]), "hi": max(seeds[(n, f)][0])} for f in fractions] for n in names}
    arms = [run_name(a) for a in cfg.studies.beyond]
    done = {n: ensure_pretrained(cfg, n) for n in arms}                  # finished: read, not trained
    payload = {
        "study": "beyond", **common, "score_by_fraction": by_fraction,
        "specs": {run_name(a): s for a, s in cfg.studies.beyond.items()},
        "questions": {q: questions[q] for q in QUESTIONS if q in questions},
        "aware": {n: r["aware"] for n, r in done.items() if r.get("aware")},
        "grow_checks": {n: read_json_or_none(named_run(cfg, n).dir / "grow_report.json") for n in arms
                        if named_run(cfg, n).key.get("init") == "grow"},
        "steps": {n: r["steps"] for n, r in done.items()},
        "paper": PAPER,
    }
    return write_result(result_path(cfg, "beyond"), cfg, payload)


# ----------------------------------------------------------------------------- tables

def runs_table(res: dict):
    """One row per run: question(s), final held-out MLM loss, mean score (over the study tasks) at each
    snapshot, and the spread of the last one over fine-tuning seeds and over pre-training seeds."""
    import pandas as pd
    last = max(res["fractions"])
    rows = []
    for name, r in res["runs"].items():
        qs = [q for q, v in res["questions"].items() if name in v["runs"]]
        ft, pt = _arm_seed_averages(res["scores"], name, last)
        row = {"run": name, "question": ", ".join(qs), "arm": "new" if name in res["specs"] else "reused",
               "MLM loss": r["mlm_loss"], "pre-training seeds": len(r.get("pretrain_seeds", [None]))}
        row.update({f"score @{p['fraction']:.0%}": p["mean"] for p in res["score_by_fraction"][name]})
        row["sd (fine-tuning seeds)"] = spread.seed_spread(ft)
        row["sd (pre-training seeds)"] = spread.seed_spread(pt)
        rows.append(row)
    return pd.DataFrame(rows).set_index("run")


def comparisons_table(res: dict):
    """One row per comparison (arm − run it is compared with, at the first and last snapshot): the difference,
    the standard errors over fine-tuning and over pre-training seeds, and whether it is resolved."""
    import pandas as pd
    rows = [{"question": q, "arm": c["a"], "against": c["b"], "fraction": c["fraction"], "diff": c["diff"],
             "SE fine-tuning": c["se_finetune"], "SE pre-training": c["se_pretrain"],
             "pre-training SE": c["se_pretrain_how"], "resolved": c["resolved"]}
            for q, v in res["questions"].items() for c in v["comparisons"]]
    return pd.DataFrame(rows).set_index(["question", "arm", "against", "fraction"])


# ----------------------------------------------------------------------------- summaries

def summary(res: dict, question: str) -> str:
    """One paragraph for a question, from the numbers: what the paper says, each comparison with its verdict,
    what the arm did (the teacher-aware weight's crossing, growth's function at init), resolved or not."""
    q = res["questions"].get(question)
    if q is None:
        return f"{TITLES[question]}: no arm of this profile asks it (studies.beyond)."
    first, last = min(res["fractions"]), max(res["fractions"])
    n_pt = {n: len(res["runs"][n].get("pretrain_seeds", [None])) for n in q["runs"]}
    parts = [f"**{TITLES[question]}.** {res['paper'][question]}",
             f"Mean score over {', '.join(res['tasks'])} ({len(res['seeds'])} fine-tuning seed(s); pre-training "
             f"seeds: " + ", ".join(f"{n} {k}" for n, k in n_pt.items()) + "):"]
    at = lambda f: [c for c in q["comparisons"] if c["fraction"] == f]  # noqa: E731
    if first != last:
        parts.append(f"at {first:.0%} of pre-training " + ", ".join(said(c, False) for c in at(first)) + ";")
    parts.append("at the end " + "; ".join(said(c) for c in at(last)) + ".")
    parts += _specific(res, question, q, last)
    n_res = sum(c["resolved"] for c in at(last))
    parts.append(f"Resolved at the end: {n_res} of {len(at(last))} comparison(s)"
                 + (": this profile does not answer the question." if n_res == 0 else "."))
    parts.append("Final held-out MLM loss: " + ", ".join(f"{n} {res['runs'][n]['mlm_loss']:.3f}" for n in q["runs"])
                 + ".")
    parts.append(chance_check([s for s in res["scores"] if s["run"] in q["runs"]]))
    return " ".join(parts)


def _specific(res: dict, question: str, q: dict, last: float) -> list[str]:
    out = []
    if question == "soft_weight":
        for name in q["arms"]:
            spec = res["specs"][name]["alpha_soft"] or {}
            st, total = res["aware"].get(name), res["steps"][name]
            if spec.get("kind") == "teacher_aware" and st:
                if st["crossed_at"] is None:
                    out.append(f"In {name} the student's running hard loss never fell below the teacher's (final "
                               f"EMAs {st['ema_student']:.3f} vs {st['ema_teacher']:.3f}), so a_s followed its "
                               f"schedule throughout: the run trained exactly as that schedule alone would.")
                else:
                    out.append(f"In {name} the student's running hard loss fell below the teacher's at step "
                               f"{st['crossed_at']} of {total} (final EMAs {st['ema_student']:.3f} vs "
                               f"{st['ema_teacher']:.3f}); a_s then decayed to {spec['floor']:g}.")
            elif spec.get("kind") == "linear_until":
                out.append(f"In {name} a_s fell from {spec['start']:g} to {spec['end']:g} over the first "
                           f"{spec['until']:.0%} of training (Knowledge Inheritance's schedule), then MLM only.")
    if question == "teacher_free":
        for name in q["arms"]:
            ag = res["specs"][name]["against"]
            teach = next((b for b in ag if b.startswith("dwt-")), None)
            c = {c["b"]: c for c in q["comparisons"] if c["a"] == name and c["fraction"] == last}
            if teach and "student" in c and teach in c:
                reg, know = c["student"], c[teach]
                out.append(f"Split of the weak teacher's gain over the student: regularisation (smoothed labels − "
                           f"student) {reg['diff']:+.2f}, {'resolved' if reg['resolved'] else 'not resolved'}; "
                           f"knowledge ({teach} − smoothed labels) {-know['diff'] + 0.0:+.2f}, "
                           f"{'resolved' if know['resolved'] else 'not resolved'}.")
    if question == "growth":
        for name, rep in res["grow_checks"].items():
            if rep:
                out.append(f"{name} started as the teacher's function: largest logit difference at step 0 "
                           f"{rep['function_gap']:.1e} on {rep['function_gap_blocks']} held-out blocks (layers "
                           f"{rep['layer_sources']}: teacher layer or new).")
    return out
