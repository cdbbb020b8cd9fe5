"""Studies, result files, figures, the plan, papermill reproduction and notebook hygiene."""
import ast
import json
from pathlib import Path

import nbformat
import pytest

from dwt_lib.notebook import plots
from dwt_lib.studies import results, spread, identity as studies
from dwt_lib.config.load import load_params
from dwt_lib.studies.plan import format_plan, make_plan

REPO = Path(__file__).resolve().parent.parent
SMALL = {"pretrain.max_steps": 4, "pretrain.log_every": 2, "pretrain.eval_every": 4, "pretrain.checkpoint_every": 4,
         "finetune.tasks": ["sst2"], "finetune.max_train_examples": 32, "finetune.max_eval_examples": 32}


@pytest.fixture
def outdir(tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path))
    return tmp_path


def test_plan_paper_lists_every_run_and_its_cost():
    cfg = load_params("paper")
    plan = make_plan(cfg)
    names = [r["run"] for r in plan["rows"]]
    assert names == studies.all_run_names(cfg)
    same = {r["run"]: r["same_as"] for r in plan["rows"] if "same_as" in r}
    assert same == {"soft-normal": "dwt-weak"}          # identical settings are one run
    rows = {r["run"]: r for r in plan["rows"] if "same_as" not in r}
    assert rows["dwt-weak"]["pflop"] > rows["student"]["pflop"] > rows["teacher-weak"]["pflop"]
    assert rows["student"]["steps"] > 100_000 and plan["global_batch"] == 128
    assert plan["total_a100_hours"] > 0
    text = format_plan(plan)
    assert "A100-hours" in text and "remap-weak" in text


def test_run_names_and_unknown_name():
    cfg = load_params("smoke")
    assert studies.named_run(cfg, "soft-normal").id == studies.named_run(cfg, "dwt-weak").id
    assert studies.named_run(cfg, "soft-strong").id != studies.named_run(cfg, "dwt-weak").id
    assert studies.named_run(cfg, "remap-weak").key["init"] == "remap"
    with pytest.raises(ValueError, match="unknown run name 'dwt-strongest'.*known: teacher-weak"):
        studies.named_run(cfg, "dwt-strongest")


def test_study_writes_result_figures_and_reuses_runs(outdir, monkeypatch):
    cfg = load_params("smoke", SMALL)
    res = results.over_training(cfg, "param_remap", progress=False)
    path = results.result_path(cfg, "param_remap")
    saved = json.loads(path.read_text())
    prov = saved["provenance"]
    assert prov["config_hash"] == cfg.short_hash() and prov["config"]["pretrain"]["max_steps"] == 4
    assert prov["git_commit"] and "torch" in prov["versions"]
    assert {s["run"] for s in saved["scores"]} == {"remap-weak", "dwt-weak"}
    assert {s["fraction"] for s in saved["scores"]} == set(cfg.pretrain.snapshot_fractions)
    check = res["remap_check"]
    assert check["copied_and_equal"] == check["compared"] > 0

    for fig_fn, name in ((plots.over_training, "t_over"), (plots.loss_curves, "t_loss")):
        fig_fn(path, name)
        for ext in ("png", "svg"):
            assert (outdir / "smoke" / "figures" / f"{name}.{ext}").stat().st_size > 1000
    text = results.over_training_summary(res)
    assert "PR X" in text and "Remap check" in text

    # Second time: everything is reused, nothing trains.
    import dwt_lib.train.finetune
    import dwt_lib.train.pretrain

    def boom(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(dwt_lib.train.pretrain, "train", boom)
    monkeypatch.setattr(dwt_lib.train.finetune, "finetune", boom)
    again = results.over_training(cfg, "param_remap", progress=False)
    assert again["scores"] == res["scores"]


def test_teacher_quality_figure_from_result_file(tmp_path):
    """The figure reads only the result file: a hand-made file with two teachers draws and saves."""
    runs = {"teacher-weak": {"params": 3e6, "glue_avg": 60.0}, "teacher-very_weak": {"params": 2e6, "glue_avg": 55.0},
            "student": {"params": 4e6, "glue_avg": 62.0}, "dwt-weak": {"params": 4e6, "glue_avg": 63.0},
            "dwt-very_weak": {"params": 4e6, "glue_avg": 61.0}}
    res = {"runs": runs, "roles": ["weak", "very_weak"], "dwt_gain": {"weak": 1.0, "very_weak": -1.0},
           "tasks": ["sst2"], "paper": results.PAPER_FIG2, "provenance": {"profile": "t"}}
    p = tmp_path / "results" / "teacher_quality.json"
    p.parent.mkdir()
    p.write_text(json.dumps(res))
    fig = plots.teacher_quality(p)
    assert "0 of 2 resolved" in fig.axes[0].get_title()              # no comparisons in the file: none resolved
    res["dwt_gain_compare"] = {"weak": spread.compare(([63.0, 63.2, 62.8], [63.0, 63.1]), ([62.0, 62.1, 61.9], [62.0, 62.05])),
                               "very_weak": spread.compare(([61, 63, 59], [61.0]), ([62, 60, 64], [62.0]))}
    p.write_text(json.dumps(res))
    ax = plots.teacher_quality(p).axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert "1 of 2 resolved" in ax.get_title()
    assert "+1.00, paper +1.44" in labels and "-1.00 (0.6 SE), paper -1.37" in labels, labels
    assert (tmp_path / "figures" / "03_teacher_quality.png").exists()
    assert (tmp_path / "figures" / "03_teacher_quality.svg").exists()


def _notebooks():
    return sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_notebooks_committed_clean_and_thin():
    nbs = _notebooks()
    assert [p.name[:2] for p in nbs] == ["01", "02", "03", "04", "05", "06"]
    for p in nbs:
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        for c in code:
            assert not c.outputs and c.execution_count is None, f"{p.name}: committed with outputs"
            tree = ast.parse(c.source)
            assert not any(isinstance(n, (ast.ClassDef, ast.For, ast.While)) for n in ast.walk(tree)), \
                f"{p.name}: loops or classes belong in dwt_lib, not in a notebook cell"
            # a "\tau" in a non-raw string is a tab: it printed "au" in a figure's labels
            assert "\t" not in c.source, f"{p.name}: a tab in cell {c.id} (a '\\t' read as a tab? use a raw string)"
        params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and params[0] is code[0], f"{p.name}: the first code cell is the parameters cell"
        assigned = {t.id for n in ast.parse(params[0].source).body for t in n.targets}
        # `interactive` switches the JupyterLab widgets on (default) or off (dwt reproduce)
        assert {"profile", "overrides"} <= assigned <= {"profile", "overrides", "interactive"}, \
            f"{p.name}: parameters cell holds {assigned}"
        if any("explore." in c.source for c in code):
            assert "interactive" in assigned, f"{p.name}: widgets without an `interactive` parameter"


def test_reproduce_failing_cell_names_notebook_and_cell(tmp_path, monkeypatch, capsys):
    from dwt_lib import reproduce
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "smoke"\noverrides = {}', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("raise RuntimeError('bad cell here')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, nbdir / "01_broken.ipynb")
    monkeypatch.setattr(reproduce, "NOTEBOOKS", nbdir)
    monkeypatch.setenv("DWT_OUTPUTS_DIR", str(tmp_path / "out"))
    rc = reproduce.reproduce("smoke")
    err = capsys.readouterr().err
    assert rc == 1
    assert "01_broken.ipynb failed at cell" in err and "bad cell here" in err
    assert (tmp_path / "out" / "smoke" / "notebooks" / "01_broken.ipynb").exists()


def test_run_identity_follows_the_processed_data(monkeypatch):
    """A change of the data code (another tokenizer) or of the dataset read gives another run id."""
    from dwt_lib.data import tokens
    from dwt_lib.studies import identity as studies
    cfg = load_params("smoke")
    before = studies.named_run(cfg, "student").id
    monkeypatch.setattr(tokens, "DATA_CODE_VERSION", tokens.DATA_CODE_VERSION + 1)
    assert studies.named_run(cfg, "student").id != before
    monkeypatch.undo()
    assert studies.named_run(cfg, "student").id == before
