"""``dwt``: the command line.

    dwt pretrain  --profile P --run NAME [--set key=value ...]
    dwt finetune  --profile P --run NAME --task T [--fraction F] [--seed S]
    dwt study     --profile P teacher_quality|soft_weight|param_remap|beyond
    dwt runs      --profile P [--plot RUN ...]
    dwt plan      --profile P
    dwt reproduce --profile P [--notebooks 01,02] [--read-only | --export]
    dwt export    --profile P [--to DIR]
    dwt verify    --profile P [--runs NAME ...] [--cheapest N]

With ``launch.num_machines > 1`` the same ``pretrain | finetune | study | reproduce`` runs on every node, with
``--node-rank K`` (or ``$SLURM_NODEID``): node 0 drives, the others join its runs (:mod:`dwt_lib.studies.nodes`).

``--set`` applies dotted overrides to the profile (``--set pretrain.max_steps=10``), values
parsed as YAML. Every expected error (params, data, names, disk, damaged files, Ctrl-C) prints
one line ``dwt: <what> (<where>); <fix>`` and exits with 2 (:mod:`dwt_lib.core.errors`); ``--debug``
or ``DWT_DEBUG=1`` adds the traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from dwt_lib.core.errors import ConfigError
from dwt_lib.config.load import config_from_dict, load_params
from dwt_lib.config.arms import seed_ok
from dwt_lib.core.errors import debug_enabled, report
from dwt_lib.core.paths import pin_environment
from dwt_lib.core.io import atomic_write_json
from dwt_lib.notebook import explore, plots
from dwt_lib.reproduce import reproduce
from dwt_lib.runs.registry import format_runs, list_runs, outputs_dir, read_json, registry_root, Run
from dwt_lib.studies import beyond as beyond_study, nodes, results
from dwt_lib.studies.export import export_registry
from dwt_lib.studies.identity import ensure_finetuned, ensure_pretrained
from dwt_lib.studies.plan import data_prep_estimate, format_data_estimate, format_plan, make_plan
from dwt_lib.studies.preflight import check
from dwt_lib.studies.verify import verify
from dwt_lib.train.pretrain import train


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"--set {p}: expected key=value, e.g. pretrain.max_steps=10")
        k, v = p.split("=", 1)
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            where = f" at column {e.problem_mark.column + 1}" if getattr(e, "problem_mark", None) else ""
            raise ConfigError(f"--set {p}: the value is not valid YAML{where} ({getattr(e, 'problem', e)}); "
                              f"quote it or write a YAML scalar, list or mapping, e.g. {k}=[0.5, 1.0]") from None
    return out


def _cfg(args):
    return load_params(args.profile, _overrides(args.set))


def _on_every_node(cfg, args, body) -> int:
    """``body()`` as on one machine; with ``launch.num_machines > 1`` only node 0 runs it, inside a session that the
    other nodes join (they run each pre-training run's workers node 0 opens, then leave): :mod:`dwt_lib.studies.nodes`."""
    if cfg.launch.num_machines == 1:
        return body()
    rank = nodes.node_rank(cfg, args.node_rank)
    if rank:
        return nodes.follow(cfg, rank)
    with nodes.Driver(cfg) as driver:
        code = body()
        if code:
            driver.failed(f"node 0's command exited with code {code}; its output says why")
        return code


def cmd_pretrain(args) -> int:
    cfg = _cfg(args)

    def body() -> int:
        check(cfg, [args.run])
        res = ensure_pretrained(cfg, args.run)
        print(f"{args.run}: held-out MLM loss {res['final_eval']['mlm_loss']:.4f}, "
              f"accuracy {res['final_eval']['mlm_accuracy']:.4f} ({res['run']['id']})")
        return 0
    return _on_every_node(cfg, args, body)


def cmd_finetune(args) -> int:
    if args.seed is not None and not seed_ok(args.seed):
        raise ConfigError(f"--seed {args.seed}: expected a fine-tuning seed in [0, 2^32); e.g. --seed 1")
    cfg = _cfg(args)
    seeds = [args.seed] if args.seed is not None else list(cfg.finetune.seeds)
    tasks = [args.task] if args.task else list(cfg.finetune.tasks)

    def body() -> int:
        check(cfg, [args.run], tasks, [args.fraction])       # an unknown or unreadable task fails before pre-training
        for task in tasks:
            for seed in seeds:
                r = ensure_finetuned(cfg, args.run, task, seed, args.fraction)
                print(f"{args.run} @ {args.fraction:.2f} {task} seed {seed}: {r['score']:.2f}")
        return 0
    return _on_every_node(cfg, args, body)


def cmd_study(args) -> int:
    cfg = _cfg(args)
    return _on_every_node(cfg, args, lambda: _study(cfg, args))


def _study(cfg, args) -> int:
    if args.name == "teacher_quality":
        res = results.teacher_quality(cfg)
        plots.teacher_quality(results.result_path(cfg, args.name))
        print(results.teacher_quality_table(res).round(2).to_string())
        print(results.teacher_quality_summary(res))
    elif args.name == "beyond":                  # notebook 06: one figure and one paragraph per question
        res = beyond_study.run_study(cfg)
        print(beyond_study.comparisons_table(res).round(2).to_string())
        for q in res["questions"]:
            plots.beyond(results.result_path(cfg, args.name), q)
            print(beyond_study.summary(res, q))
    else:
        res = results.over_training(cfg, args.name)
        fig = {"soft_weight": "04_soft_weight", "param_remap": "05_param_remap"}[args.name]
        plots.over_training(results.result_path(cfg, args.name), fig)
        plots.loss_curves(results.result_path(cfg, args.name), f"{fig}_losses")
        print(results.over_training_table(res).to_string())
        print(results.over_training_summary(res))
    print(f"result file: {results.result_path(cfg, args.name)}")
    return 0


def cmd_runs(args) -> int:
    cfg = _cfg(args)
    print(format_runs(list_runs(cfg, checksums=args.checksums)))
    if args.plot:
        try:
            chosen = explore.resolve_runs(cfg, args.plot)
        except ValueError as e:
            print(f"dwt runs: error: {e}", file=sys.stderr)
            return 2
        plots.compare_runs(registry_root(cfg) / "runs", chosen, save_as="compare_runs")
        print(f"figure: {outputs_dir(cfg) / 'figures' / 'compare_runs.png'} (and .svg)")
    return 0


def cmd_plan(args) -> int:
    cfg = _cfg(args)
    print(format_plan(make_plan(cfg)))
    print(format_data_estimate(data_prep_estimate(cfg)))
    return 0


def cmd_reproduce(args) -> int:
    only = args.notebooks.split(",") if args.notebooks else None
    overrides = _overrides(args.set)
    cfg = load_params(args.profile, overrides)
    return _on_every_node(cfg, args, lambda: reproduce(args.profile, only=only, overrides=overrides,
                                                      read_only=args.read_only, export=args.export))


def cmd_export(args) -> int:
    export_registry(_cfg(args), Path(args.to) if args.to else None)
    return 0


def cmd_verify(args) -> int:
    return 0 if verify(_cfg(args), args.runs, args.cheapest, args.keep)["ok"] else 1


def cmd_worker(args) -> int:
    """Internal: one process of an ``accelerate launch``ed pre-training run."""
    import json
    from pathlib import Path

    d = Path(args.run_dir)
    cfg = config_from_dict(read_json(d / "config.json"))
    meta = read_json(d / "run.json")
    run = Run(kind=meta["kind"], name=meta["name"], key=meta["key"], root=d.parent.parent)
    res = train(cfg, run)
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_rank() == 0:
        atomic_write_json(d / "final.json", json.loads(json.dumps(res, default=str)))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="dwt", description="Distillation from Weak Teacher: companion CLI")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error (also DWT_DEBUG=1)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def add(name, fn, help):
        p = sub.add_parser(name, help=help)
        p.add_argument("--profile", default="smoke", help="profile name (params/<name>.yaml) or a YAML path")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="dotted override, repeatable")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the traceback of an error (also DWT_DEBUG=1)")
        p.set_defaults(fn=fn)
        return p

    def several(p):
        p.add_argument("--node-rank", type=int, default=None, metavar="K",
                       help="this node's rank with launch.num_machines > 1 (0 drives; default $SLURM_NODEID, "
                            "launch.node_rank_env)")
        return p

    p = several(add("pretrain", cmd_pretrain, "pre-train one run (and its teacher), or resume it"))
    p.add_argument("--run", required=True, help="teacher-<role> | student | dwt-<role> | soft-<variant> | remap-<role>")
    p = several(add("finetune", cmd_finetune, "fine-tune a pre-trained run on GLUE tasks"))
    p.add_argument("--run", required=True)
    p.add_argument("--task", default=None, help="one task (default: the profile's tasks)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--fraction", type=float, default=1.0, help="snapshot fraction of pre-training")
    p = several(add("study", cmd_study, "run one study without notebooks: result file, figure, summary"))
    p.add_argument("name", choices=["teacher_quality", "soft_weight", "param_remap", "beyond"])
    p = add("runs", cmd_runs, "list runs with status, progress and wall time")
    p.add_argument("--plot", nargs="+", metavar="RUN", help="overlay these finished runs' loss curves and fine-tuning "
                   "scores (run names like dwt-weak, or ids) in figures/compare_runs.png")
    p.add_argument("--checksums", action="store_true", help="check every saved model's sha256 too (reads every "
                   "weight file; by default files, sizes and weight headers only)")
    add("plan", cmd_plan, "print every run the studies need and its cost, without running")
    p = several(add("reproduce", cmd_reproduce, "execute every notebook with papermill for a profile"))
    p.add_argument("--notebooks", default=None, help="comma-separated prefixes, e.g. 01,03")
    p.add_argument("--read-only", action="store_true", help="read the exported registry (dwt export): no mirror, "
                   "nothing trained; a run not in it is an error (also DWT_READ_ONLY=1)")
    p.add_argument("--export", action="store_true", help="export the registry at the end (as dwt export)")
    p = add("export", cmd_export, "copy the registry without checkpoints into outputs/<profile>/registry "
            "(git-tracked) for --read-only")
    p.add_argument("--to", default=None, metavar="DIR", help="another folder (default outputs/<profile>/registry)")
    p = add("verify", cmd_verify, "retrain finished runs from scratch in a temporary folder and compare")
    p.add_argument("--runs", nargs="+", metavar="RUN", help="these runs (default: the cheapest recorded ones)")
    p.add_argument("--cheapest", type=int, default=1, help="how many of the cheapest recorded runs (default 1)")
    p.add_argument("--keep", action="store_true", help="keep the temporary outputs folder")
    w = sub.add_parser("_worker")
    w.add_argument("--run-dir", required=True)
    w.add_argument("--name", required=True)
    w.set_defaults(fn=cmd_worker)

    args = ap.parse_args(argv)
    try:
        pin_environment()           # relative DWT_OUTPUTS_DIR / CACHE / DATA: resolved once, here
        return args.fn(args)
    except (Exception, KeyboardInterrupt) as e:     # expected errors: one line, exit 2; bugs: traceback
        _close_progress_bars()
        return report(e, debug_enabled(args.debug))


def _close_progress_bars() -> None:
    """End any open tqdm bar first, so the error line starts on its own line."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", []) or []):
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
