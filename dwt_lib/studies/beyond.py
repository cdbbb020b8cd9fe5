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
from dwt_lib.studies.results import _arm_seed_averages, chance_check, collapsed, result_path, snapshot_scores
from dwt_lib.studies.text import md_table
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
    "soft_weight": "The paper recommends a_s 4 → 1 (Sec. 3.2) but never runs it (notebook 04 does); the "
                   "teacher-aware weight and Knowledge Inheritance's decay to 0 (Qin et al., 2022) are new.",
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
    """A headline and a table for a question, from the numbers: each comparison at every snapshot with its larger
    standard error and verdict, what the paper says, and what the arm did (the teacher-aware weight's crossing,
    growth's function at init)."""
    q = res["questions"].get(question)
    if q is None:
        return f"{TITLES[question]}: no arm of this profile asks it (studies.beyond)."
    first, last = min(res["fractions"]), max(res["fractions"])
    at = lambda f: [c for c in q["comparisons"] if c["fraction"] == f]  # noqa: E731
    n_res = sum(c["resolved"] for c in at(last))
    head = f"**{TITLES[question]}: {n_res} of {len(at(last))} comparisons resolved at the end.** {PAPER[question]}"
    loss = {n: res["runs"][n]["mlm_loss"] for n in q["runs"]}
    n_pt = {n: len(res["runs"][n].get("pretrain_seeds", [None])) for n in q["runs"]}
    early = {(c["a"], c["b"]): c for c in at(first)}
    design = f"comparison ({', '.join(res['tasks'])}; {len(res['seeds'])} fine-tuning seeds)"
    table = md_table([design, f"at {first:.0%}", f"at {last:.0%}", "± SE (larger)", "resolved", "final MLM loss",
                      "pre-training seeds"],
                     [[f"{c['a']} − {c['b']}", f"{early[(c['a'], c['b'])]['diff'] + 0.0:+.2f}" if first != last else "",
                       f"{c['diff'] + 0.0:+.2f}", spread.se_text(c), "yes" if c["resolved"] else "no",
                       f"{loss[c['a']]:.3f} / {loss[c['b']]:.3f}", f"{n_pt[c['a']]} / {n_pt[c['b']]}"]
                      for c in at(last)])
    mine = [s for s in res["scores"] if s["run"] in q["runs"]]
    tail = _specific(res, question, q, last) + [collapsed(mine), chance_check(mine)]
    return head + "\n\n" + table + "\n\n" + " ".join(t for t in tail if t)


def _specific(res: dict, question: str, q: dict, last: float) -> list[str]:
    out = []
    if question == "soft_weight":
        for name in q["arms"]:
            spec = res["specs"][name]["alpha_soft"] or {}
            st, total = res["aware"].get(name), res["steps"][name]
            if spec.get("kind") == "teacher_aware" and st:
                if st["crossed_at"] is None:
                    out.append(f"{name}: the student's hard loss never crossed the teacher's "
                               f"({st['ema_student']:.3f} vs {st['ema_teacher']:.3f}): a_s kept its schedule.")
                else:
                    out.append(f"{name}: the student's running hard loss fell below the teacher's at step "
                               f"{st['crossed_at']} of {total}; a_s then decayed to {spec['floor']:g}.")
            elif spec.get("kind") == "linear_until":
                out.append(f"{name}: a_s {spec['start']:g} → {spec['end']:g} over the first {spec['until']:.0%}.")
    if question == "teacher_free":
        for name in q["arms"]:
            ag = res["specs"][name]["against"]
            teach = next((b for b in ag if b.startswith("dwt-")), None)
            c = {c["b"]: c for c in q["comparisons"] if c["a"] == name and c["fraction"] == last}
            if teach and "student" in c and teach in c:
                reg, know = c["student"], c[teach]
                out.append(f"The teacher's gain split: regularisation (smoothed − student) {reg['diff']:+.2f}, "
                           f"knowledge ({teach} − smoothed) {-know['diff'] + 0.0:+.2f}.")
    if question == "growth":
        for name, rep in res["grow_checks"].items():
            if rep:
                out.append(f"{name} started as the teacher's function (largest logit difference at step 0: "
                           f"{rep['function_gap']:.1e}; layers {rep['layer_sources']}).")
    return out
