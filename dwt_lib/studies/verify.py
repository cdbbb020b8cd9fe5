"""``dwt verify``: retrain finished runs from scratch in a temporary folder and compare with the recorded numbers.

    dwt verify --profile P [--runs NAME ...] [--cheapest N] [--keep]

The recorded numbers are a run's ``result.json`` in the registry (``<outputs>/<profile>/runs/<id>/``), else the
committed result files (``<outputs>/<profile>/results/*.json``, each run's ``id``, ``mlm_loss``,
``mlm_accuracy``). Without ``--runs`` the ``--cheapest`` N recorded runs (by recorded training time, a DWT run's
teacher included) are retrained. The rerun goes to a temporary outputs folder (processed data is reused from the
data cache: it is checksummed), trains every run it needs from step 0, and is compared quantity by quantity:

- on the same machine, threads and versions a CPU rerun is deterministic: every quantity must agree to 1e-6;
- otherwise within :data:`TOLERANCES` (a tenth of the mini student's pre-training seed spread, 0.021 nats): a
  larger difference is as large as the effects the studies measure, and is reported as such.

Each side's machine (CPU model, ISA flags, torch threads, GPU), versions and commit are printed, so a difference
can be traced to what changed. Exit code 0: all agree; 1: a quantity differs beyond its tolerance.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

from dwt_lib.config.schema import Config
from dwt_lib.core.errors import UnknownNameError
from dwt_lib.runs.machine import machine
from dwt_lib.core.paths import cache_root
from dwt_lib.runs.registry import check_result, outputs_dir, read_json, versions
from dwt_lib.studies.identity import all_run_names, ensure_pretrained, named_run, teacher_name

#: quantity -> (absolute tolerance across machines, unit); on the same setup every quantity must agree to SAME.
TOLERANCES = {"mlm_loss": (0.002, "nats"), "mlm_accuracy": (0.002, "")}
SAME = 1e-6
VERSIONS = ("python", "torch", "transformers", "numpy")


def recorded_runs(cfg: Config) -> dict[str, dict]:
    """Run id -> the recorded numbers ``{mlm_loss, mlm_accuracy, train_time_s, source, provenance}``: the registry's
    finished runs first, then runs named in the committed result files."""
    out: dict[str, dict] = {}
    root = outputs_dir(cfg)
    for p in sorted((root / "results").glob("*.json")):
        try:
            res = read_json(p)
        except Exception:                         # a damaged result file records nothing usable
            continue
        for r in (res.get("runs") or {}).values() if isinstance(res, dict) else ():
            if isinstance(r, dict) and isinstance(r.get("id"), str) and r.get("mlm_loss") is not None:
                out.setdefault(r["id"], {"mlm_loss": r["mlm_loss"], "mlm_accuracy": r.get("mlm_accuracy"),
                                         "train_time_s": r.get("train_time_s"), "source": p,
                                         "provenance": res.get("provenance", {})})
    for d in sorted(p for p in (root / "runs").glob("*-*") if p.is_dir()):
        res, why = check_result(d / "result.json")
        if why is None and "final_eval" in res:
            out[d.name] = {"mlm_loss": res["final_eval"]["mlm_loss"],
                           "mlm_accuracy": res["final_eval"].get("mlm_accuracy"),
                           "train_time_s": res.get("train_time_s"), "source": d / "result.json",
                           "provenance": res.get("provenance", {})}
    return out


def choose(cfg: Config, recorded: dict, names: Optional[list[str]], cheapest: int) -> list[str]:
    """The run names to retrain: ``names`` (each must be recorded), or the ``cheapest`` recorded ones."""
    by_id = {}
    for n in all_run_names(cfg):
        by_id.setdefault(named_run(cfg, n).id, n)
    if names:
        for n in names:
            if named_run(cfg, n).id not in recorded:
                raise UnknownNameError(f"run {n} has no recorded result to compare with", "--runs",
                                       f"recorded runs: {', '.join(by_id[i] for i in recorded if i in by_id) or 'none'}")
        return list(names)

    def cost(n: str) -> float:
        t = teacher_name(cfg, n)
        own = recorded[named_run(cfg, n).id].get("train_time_s") or float("inf")
        return own + ((recorded.get(named_run(cfg, t).id) or {}).get("train_time_s") or 0.0 if t else 0.0)

    have = [n for i, n in by_id.items() if i in recorded]
    if not have:
        raise UnknownNameError(f"profile {cfg.profile} has no finished run to verify", outputs_dir(cfg),
                               f"train one first (dwt pretrain --profile {cfg.profile} --run student)")
    return sorted(have, key=cost)[:max(1, cheapest)]


@contextlib.contextmanager
def _outputs_in(folder: Path):
    """Runs go to ``folder`` meanwhile; the processed-data cache stays where it is (reused, checksummed)."""
    saved = {k: os.environ.get(k) for k in ("DWT_OUTPUTS_DIR", "DWT_CACHE_DIR")}
    os.environ["DWT_CACHE_DIR"] = str(cache_root())
    os.environ["DWT_OUTPUTS_DIR"] = str(folder)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _setup(prov: dict) -> dict:
    m = prov.get("machine") or {}
    v = prov.get("versions") or {}
    return {"machine": {k: m.get(k) for k in ("cpu", "isa", "torch_threads", "gpu", "gpu_count")} if m else None,
            "versions": {k: v.get(k) for k in VERSIONS}, "commit": prov.get("git_commit")}


def _describe(s: dict) -> str:
    m = s["machine"]
    where = ("machine not recorded (a result from before machine provenance)" if m is None else
             f"{m['cpu']} [{' '.join(m['isa']) or 'no AVX'}], {m['torch_threads']} torch threads, "
             + (f"{m['gpu_count']} x {m['gpu']}" if m["gpu_count"] else "no GPU"))
    vs = ", ".join(f"{k} {v}" for k, v in s["versions"].items() if v)
    return f"{where}; {vs}; commit {s['commit']}"


def verify(cfg: Config, names: Optional[list[str]] = None, cheapest: int = 1, keep: bool = False,
           say=print) -> dict:
    """Retrain the chosen runs in a temporary outputs folder and compare; returns ``{"ok", "rows", "folder"}``."""
    recorded = recorded_runs(cfg)
    chosen = choose(cfg, recorded, names, cheapest)
    folder = Path(tempfile.mkdtemp(prefix="dwt-verify-"))
    rows, ok = [], True
    try:
        with _outputs_in(folder):
            for n in chosen:
                say(f"[verify] retraining {n} from scratch in {folder}")
                res = ensure_pretrained(cfg, n, progress=False)
                rec = recorded[named_run(cfg, n).id]
                mine = _setup({**res["provenance"], "machine": res["provenance"].get("machine") or machine()})
                theirs = _setup(rec["provenance"])
                same = (theirs["machine"] is not None and theirs["versions"] == mine["versions"]
                        and theirs["machine"] == mine["machine"])
                say(f"  recorded ({rec['source']}): {_describe(theirs)}")
                say(f"  rerun: {_describe(mine)}")
                for q, (tol, unit) in TOLERANCES.items():
                    a, b = rec.get(q), res["final_eval"].get(q)
                    if a is None or b is None:
                        continue
                    t = SAME if same else tol
                    diff = abs(a - b)
                    verdict = "identical" if diff == 0 else ("within tolerance" if diff <= t else "DIFFERS")
                    ok &= diff <= t
                    rows.append({"run": n, "quantity": q, "recorded": a, "rerun": b, "diff": diff, "tolerance": t,
                                 "same_setup": same, "verdict": verdict})
                    say(f"  {q:<13} recorded {a:.6f}  rerun {b:.6f}  |diff| {diff:.2e}  tolerance {t:g} {unit}"
                        f"{' (same setup)' if same else ''}: {verdict}")
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    say(f"verify: {'all quantities agree' if ok else 'a quantity differs beyond its tolerance'} "
        f"({len(chosen)} run(s): {', '.join(chosen)})" + (f"; reruns kept in {folder}" if keep else ""))
    return {"ok": ok, "rows": rows, "folder": folder, "versions": versions()}
