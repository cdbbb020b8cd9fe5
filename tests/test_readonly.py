"""Read-only mode (issue 20 item 7): the studies and notebooks read an exported registry (``dwt export``), with no
mirror, no checkpoints and nothing trained; a run the export lacks is one clear error; sha256 checks of saved models
still catch damaged weights in an ordinary registry."""
import json
import shutil

import pytest

import dwt_lib.train.finetune
import dwt_lib.train.pretrain
from dwt_lib.config.load import load_params
from dwt_lib.core import readonly
from dwt_lib.core.errors import ReadOnlyError
from dwt_lib.data import prepare
from dwt_lib.notebook.predictions import teacher_prediction
from dwt_lib.runs import registry
from dwt_lib.studies import identity, results
from dwt_lib.studies.export import export_registry

SMALL = {"pretrain.max_steps": 4, "pretrain.log_every": 2, "pretrain.eval_every": 4, "pretrain.checkpoint_every": 4,
         "finetune.tasks": ["sst2"], "finetune.max_train_examples": 32, "finetune.max_eval_examples": 32,
         "studies.pretrain_seeds": {}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke registry (the remapping study at 4 steps: teacher-weak, dwt-weak, remap-weak, 4 fine-tuning runs),
    exported; a copy of the ordinary registry is kept in ``normal/`` for the damaged-weights test."""
    root = tmp_path_factory.mktemp("readonly")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DWT_OUTPUTS_DIR", str(root / "out"))
        mp.delenv(readonly.ENV, raising=False)
        cfg = load_params("smoke", SMALL)
        pr = results.over_training(cfg, "param_remap", progress=False)
        man = export_registry(cfg, log=lambda s: None)
    shutil.copytree(root / "out" / "smoke" / "runs", root / "normal" / "smoke" / "runs")
    return root, cfg, pr, man


def _same(a, b) -> bool:
    """Equal as written to a result file (a one-seed spread is NaN, and NaN != NaN)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _boom(what, calls):
    def f(*a, **k):
        calls.append(what)
        raise AssertionError(f"{what} was called")
    return f


def test_export_holds_small_files_and_only_the_loaded_models(trained):
    root, cfg, _, man = trained
    exp = root / "out" / "smoke" / "registry"
    assert json.loads((exp / readonly.MANIFEST).read_text())["runs"] == man["runs"]
    teacher, remap = identity.named_run(cfg, "teacher-weak").id, identity.named_run(cfg, "remap-weak").id
    assert man["runs"][teacher]["models"] == ["model"] and man["runs"][remap]["models"] == ["init"]
    assert not list(exp.rglob("checkpoints")) and not list(exp.rglob("snapshots"))
    assert {p.parent.name for p in exp.rglob("model.safetensors")} == {"model", "init"}
    assert (exp / man["data"] / "train.npy").is_file()
    assert 0 < man["size"]["zlib_bytes"] < man["size"]["bytes"]


def test_read_only_studies_give_the_same_results_and_train_nothing(trained, tmp_path, monkeypatch):
    root, cfg, pr, _ = trained
    out = root / "out"
    shutil.rmtree(out / "smoke" / "runs")            # a fresh clone: no registry, no data cache, no mirror
    shutil.rmtree(out / ".cache")
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(out))
    monkeypatch.setenv("DWT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(readonly.ENV, "1")
    calls = []
    monkeypatch.setattr(dwt_lib.train.pretrain, "train", _boom("pretrain.train", calls))
    monkeypatch.setattr(dwt_lib.train.finetune, "finetune", _boom("finetune.finetune", calls))
    monkeypatch.setattr(prepare, "build", _boom("prepare.build", calls))

    pr2 = results.over_training(cfg, "param_remap", progress=False)
    for key in ("runs", "scores", "remap_check", "logs", "lr_selection"):
        assert _same(pr2[key], pr[key]), key
    pred = teacher_prediction(cfg, "weak")           # notebook 02: the exported weak teacher on exported blocks
    assert pred.real and len(pred.tokens) == len(pred.logits)
    assert prepare.prepare_pretraining_data(cfg).cache_dir.parent == out / "smoke" / "registry"
    assert not calls
    assert not (out / "smoke" / "runs").exists() and not (out / ".cache").exists()   # nothing written there

    # a run the export does not hold: one error naming it and the fix, nothing trained
    with pytest.raises(ReadOnlyError, match=r"run soft-strong \(dwt-\w+\) is not in the exported registry.*"
                                            r"without --read-only"):
        identity.ensure_pretrained(cfg, "soft-strong")
    assert not calls

    # control: the same call without read-only mode reaches the training entry point
    monkeypatch.delenv(readonly.ENV)
    with pytest.raises(AssertionError, match="pretrain.train was called"):
        identity.ensure_pretrained(cfg, "soft-strong")
    assert calls == ["pretrain.train"]


def test_read_only_without_an_export_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from dwt_lib.cli import main
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    monkeypatch.delenv(readonly.ENV, raising=False)
    assert main(["reproduce", "--profile", "smoke", "--read-only"]) == 2      # before any kernel starts
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dwt: read-only mode, but profile smoke has no exported registry "
                   f"({tmp_path}/smoke/registry/manifest.json); run it without --read-only / DWT_READ_ONLY=1, on a "
                   f"machine with the data (mirror or Hub), to train what is missing; then `dwt export --profile "
                   f"smoke` to add it to the export"]
    assert readonly.enabled()                        # --read-only set it for the kernels (conftest restores it)
    cfg = load_params("smoke", SMALL)
    with pytest.raises(ReadOnlyError, match="profile smoke has no exported registry.*dwt export --profile smoke"):
        results.over_training(cfg, "param_remap", progress=False)
    with pytest.raises(ReadOnlyError, match="no exported registry"):
        prepare.prepare_pretraining_data(cfg)


def test_damaged_weights_are_caught_in_a_normal_registry_and_in_the_export(trained, monkeypatch):
    root, cfg, _, _ = trained
    monkeypatch.delenv(readonly.ENV, raising=False)
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(root / "normal"))
    run = identity.named_run(cfg, "dwt-weak")        # its model was not exported: an ordinary registry checks it
    assert identity.pretrained_problem(run, run.result()) is None
    weights = run.dir / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF                                 # same size, another byte: only the sha256 sees it
    weights.write_bytes(bytes(data))
    assert "sha256 differs" in identity.pretrained_problem(run, run.result())
    row = next(r for r in registry.list_runs(cfg, checksums=True) if r["id"] == run.id)
    assert row["status"].startswith("damaged: model/model.safetensors")

    # in the export, dwt-weak has no model (not a problem) but a damaged kept model is one
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(root / "out"))
    monkeypatch.setenv(readonly.ENV, "1")
    exported = identity.named_run(cfg, "dwt-weak")
    assert identity.pretrained_problem(exported, exported.result()) is None
    teacher = identity.named_run(cfg, "teacher-weak")
    (teacher.dir / "model" / "model.safetensors").write_bytes(b"")
    assert "model/model.safetensors is damaged" in identity.pretrained_problem(teacher, teacher.result())
    with pytest.raises(ReadOnlyError, match=r"teacher-weak .* is in the exported registry but model/"):
        identity.ensure_pretrained(cfg, "teacher-weak")


def test_run_ids_in_read_only_mode_do_not_depend_on_the_mirror(tmp_path, monkeypatch):
    """mini reads stand-ins from the mirror; without it the same corpora would resolve to the Hub and every run id
    would change. Read-only mode hashes the sources recorded at export instead."""
    mirror, empty, out = tmp_path / "mirror", tmp_path / "empty", tmp_path / "out"
    for d in ("corpora/wikipedia-en", "corpora/gutenberg-en", "nyu-mll/glue"):
        (mirror / d).mkdir(parents=True)
    empty.mkdir()
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(out))
    monkeypatch.setenv("DWT_DATA_DIR", str(mirror))
    cfg = load_params("mini")
    from dwt_lib.data.sources import describe_sources
    with_mirror = identity.named_run(cfg, "dwt-weak")
    (out / "mini" / "registry").mkdir(parents=True)
    (out / "mini" / "registry" / readonly.MANIFEST).write_text(json.dumps({"sources": describe_sources(cfg)}))
    monkeypatch.setenv("DWT_DATA_DIR", str(empty))
    assert identity.named_run(cfg, "dwt-weak").id != with_mirror.id          # what the pinning is for
    monkeypatch.setenv(readonly.ENV, "1")
    pinned = identity.named_run(cfg, "dwt-weak")
    assert pinned.id == with_mirror.id and pinned.dir == out / "mini" / "registry" / "runs" / with_mirror.id
