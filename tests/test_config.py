"""Profiles load with the paper's values; bad files fail with the file and key path; hashes are stable."""
import subprocess
import sys
import textwrap

import pytest

from dwt_lib.core.paths import PARAMS_DIR
from dwt_lib.config.schema import Config
from dwt_lib.core.errors import ConfigError
from dwt_lib.config.load import load_params

PAPER = PARAMS_DIR / "paper.yaml"


def _write(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def _child(tmp_path, body, name="child.yaml"):
    """A profile that extends the paper profile (by absolute path) with ``body``."""
    return _write(tmp_path, name, f"extends: {PAPER}\n" + textwrap.dedent(body))


def test_paper_values_are_the_papers():
    c = load_params("paper")
    assert isinstance(c, Config) and c.profile == "paper"
    assert c.pretrain.lr == 5e-4
    assert c.pretrain.warmup_fraction == 0.05
    assert c.pretrain.epochs == 20
    assert c.pretrain.batch_size_per_device == 16
    assert c.launch.num_processes == 8
    assert c.data.max_seq_length == 128
    assert c.data.sample_every == 4
    assert c.data.mlm_probability == 0.15
    assert c.data.vocab_size == 30522
    assert c.distill.alpha_hard == 1.0 and c.distill.alpha_soft == {"kind": "constant", "value": 1.0}
    assert c.finetune.lr == 2e-5
    assert c.finetune.epochs == 3
    assert c.finetune.epochs_per_task == {"mrpc": 5}
    assert c.finetune.batch_size == 32
    assert c.finetune.max_seq_length == 128
    assert c.finetune.tasks == ("mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc")
    assert set(c.model.teachers) == {"weak", "very_weak", "extremely_weak"}


def test_smoke_extends_paper():
    assert "extends: paper" in (PARAMS_DIR / "smoke.yaml").read_text()
    p, s = load_params("paper"), load_params("smoke")
    assert s.profile == "smoke"
    assert s.model.student.startswith("tiny-")
    # Not overridden in smoke: inherited from paper.
    assert s.pretrain.warmup_fraction == p.pretrain.warmup_fraction
    assert s.data.mlm_probability == p.data.mlm_probability
    assert s.distill == p.distill
    assert s.short_hash() != p.short_hash()


def test_overrides_apply_and_validate():
    c = load_params("smoke", {"pretrain.max_steps": 3, "distill.temperature": {"kind": "constant", "value": 2.0}})
    assert c.pretrain.max_steps == 3 and c.distill.temperature["value"] == 2.0
    with pytest.raises(ConfigError, match=r"overrides: pretrain\.nope\.x: unknown key path"):
        load_params("smoke", {"pretrain.nope.x": 1})


@pytest.mark.parametrize("body, key, what", [
    ("pretrain:\n  lrr: 1.0e-3\n", "pretrain.lrr", "unknown key"),
    ("pretrain:\n  batch_size_per_device: 16.5\n", "pretrain.batch_size_per_device", "expected an integer"),
    ("pretrain:\n  lr: fast\n", "pretrain.lr", "expected a number"),
    ("distill:\n  scale_by_t2: 1\n", "distill.scale_by_t2", "expected true or false"),
    ("pretrain:\n  lr: -1.0e-3\n", "pretrain.lr", "expected a positive number, got -0.001"),
    ("distill:\n  temperature: {kind: constant, value: 0}\n", "distill.temperature",
     "a schedule of positive values"),
    ("distill:\n  temperature: {kind: linear, start: 1.0, end: -1.0}\n", "distill.temperature",
     "a schedule of positive values"),
    ("distill:\n  alpha_soft: {kind: linear, start: 4}\n", "distill.alpha_soft", "takes keys"),
    ("finetune:\n  lr_per_task: {colaa: 1.0e-4}\n", "finetune.lr_per_task.colaa", "a GLUE task name"),
    ("finetune:\n  lr_per_task: {cola: 0}\n", "finetune.lr_per_task.cola", "a positive number"),
    ("finetune:\n  epochs_per_task: {rte: fast}\n", "finetune.epochs_per_task.rte", "a positive number"),
    ("finetune:\n  max_train_examples_per_task: {sst2: 0.5}\n", "finetune.max_train_examples_per_task.sst2",
     "an integer >= 1 or null"),
    ("finetune:\n  max_eval_examples: 0\n", "finetune.max_eval_examples", "an integer >= 1 or null"),
])
def test_errors_name_file_and_key(tmp_path, body, key, what):
    path = _child(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_params(path)
    msg = str(e.value)
    assert str(path) in msg and f"{key}:" in msg and what in msg, msg


def test_missing_extends_target(tmp_path):
    path = _write(tmp_path, "orphan.yaml", "extends: no_such_profile\n")
    with pytest.raises(ConfigError, match="params file not found") as e:
        load_params(path)
    assert f"{path}: extends:" in str(e.value) and "no_such_profile" in str(e.value)


def test_teacher_vocab_mismatch(tmp_path):
    # Student and data on a 2000-token vocabulary; the paper teachers are pinned to 30522.
    path = _child(tmp_path, "data:\n  vocab_size: 2000\nmodel:\n  student: tiny-student\n")
    with pytest.raises(ConfigError, match="model.teachers.weak: size 'paper-teacher-4l' has vocab 30522") as e:
        load_params(path)
    assert str(path) in str(e.value) and "share one vocabulary" in str(e.value)


def test_unknown_model_size(tmp_path):
    path = _child(tmp_path, "model:\n  student: giant\n")
    with pytest.raises(ConfigError, match="model.student: unknown model size 'giant': neither in model.sizes"):
        load_params(path)


def test_profile_sizes_pick_a_width(tmp_path):
    smoke = PARAMS_DIR / "smoke.yaml"          # its models are presets (tiny-*)
    path = _write(tmp_path, "mine.yaml", f"""\
        extends: {smoke}
        model:
          sizes:
            narrow-student: {{layers: 6, hidden: 128, heads: 2}}
            tiny-teacher-4l: {{layers: 4, hidden: 128, heads: 2}}
          student: narrow-student
        """)
    c = load_params(path)
    assert c.model.sizes["narrow-student"] == {"layers": 6, "hidden": 128, "heads": 2}
    from dwt_lib.studies.identity import named_run
    base = load_params("smoke")
    # the run's identity carries the resolved shape: a new width (or a preset redefined) is a new run
    st = named_run(c, "student")
    assert st.key["shape"]["hidden_size"] == 128 and st.key["shape"]["intermediate_size"] == 512
    assert st.id != named_run(base, "student").id
    assert named_run(c, "teacher-weak").id != named_run(base, "teacher-weak").id
    assert named_run(c, "teacher-very_weak").id == named_run(base, "teacher-very_weak").id
    # the size merges key by key with the parent's, as every mapping does; so does the run
    wider = load_params(path, {"model.sizes": {"narrow-student": {"layers": 6, "hidden": 192, "heads": 3}}})
    assert named_run(wider, "student").id != st.id
    assert named_run(wider, "dwt-weak").key["shape"]["hidden_size"] == 192


@pytest.mark.parametrize("body, key, what", [
    ("model:\n  sizes: {s: {layers: 6, hidden: 100, heads: 3}}\n  student: s\n", "model.sizes.s.heads",
     "hidden 100 is not divisible by 3 heads"),
    ("model:\n  sizes: {s: {layers: 6, hidden: 128, heads: 2, dim: 4}}\n", "model.sizes.s.dim", "unknown key"),
    ("model:\n  sizes: {s: {layers: 6, hidden: 128}}\n", "model.sizes.s.heads", "missing"),
    ("model:\n  sizes: {s: 6}\n", "model.sizes.s", "expected a mapping"),
    ("model:\n  sizes: {s: {layers: 6, hidden: 128, heads: 2}}\n  student: t\n", "model.student",
     "unknown model size 't': neither in model.sizes nor a preset (model.sizes: s; presets:"),
    ("model:\n  sizes: [6]\n", "model.sizes", "expected a mapping"),
])
def test_profile_size_errors(tmp_path, body, key, what):
    path = _child(tmp_path, body)
    with pytest.raises(ConfigError) as e:
        load_params(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {key}: ") and what in msg and msg.count("\n") == 0, msg


def test_short_hash_stable_across_processes():
    here = load_params("smoke").short_hash()
    # The hash depends only on the config's values; a stub ``transformers`` keeps the child
    # process from spending seconds importing the real one (models.py needs only SIZES here).
    code = ("import sys, types; sys.modules['transformers'] = types.SimpleNamespace("
            "BertConfig=None, BertForMaskedLM=None); "
            "from dwt_lib.config import load_params; print(load_params('smoke').short_hash())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""})
    assert out.stdout.strip() == here


def test_short_hash_ignores_key_order_and_tracks_values(tmp_path):
    a = _child(tmp_path, "pretrain:\n  lr: 1.0e-3\n  seed: 7\ndata:\n  sample_every: 2\n", "a.yaml")
    b = _child(tmp_path, "data:\n  sample_every: 2\npretrain:\n  seed: 7\n  lr: 1.0e-3\n", "b.yaml")
    ca, cb = load_params(a), load_params(b)
    assert ca.profile != cb.profile
    assert ca.short_hash() == cb.short_hash()
    assert ca.replace(**{"pretrain.seed": 8}).short_hash() != ca.short_hash()
    assert load_params(a, {"pretrain.lr": 2e-3}).short_hash() != ca.short_hash()


def test_per_task_finetune_settings_resolve_per_task(tmp_path):
    """lr / epochs / training cap per task; YAML's "5e-5" string read as a number; a fine-tuning run's
    identity holds only its own task's settings."""
    from dwt_lib.studies import identity as studies
    from dwt_lib.config.tasks import task_settings
    path = _child(tmp_path, "finetune:\n  tasks: [sst2, cola]\n  lr: 1.0e-4\n  max_train_examples: 64\n"
                  "  lr_per_task: {cola: 5e-5}\n  epochs_per_task: {cola: 3}\n"
                  "  max_train_examples_per_task: {sst2: 20000, cola: null}\n")
    cfg = load_params(path)
    cola, sst2 = task_settings(cfg.finetune, "cola"), task_settings(cfg.finetune, "sst2")
    assert (cola["lr"], cola["epochs"], cola["max_train_examples"]) == (5e-5, 3.0, None)
    assert (sst2["lr"], sst2["epochs"], sst2["max_train_examples"]) == (1e-4, cfg.finetune.epochs, 20000)
    assert "lr_per_task" not in cola and "tasks" not in cola
    other = cfg.replace(**{"finetune.lr_per_task": {"cola": 2e-5}})
    same = lambda t: studies.finetune_run(cfg, "student", t, 1).id == studies.finetune_run(other, "student", t, 1).id
    assert same("sst2") and not same("cola")


def test_per_task_maps_replace_the_parents_whole(tmp_path):
    """`epochs_per_task: {}` in a child means no task differs (paper.yaml's MRPC 5 epochs is not kept)."""
    path = _write(tmp_path, "child.yaml", """\
        extends: paper
        finetune:
          epochs_per_task: {}
          lr_per_task: {cola: 1.0e-4}
        """)
    c = load_params(path)
    assert load_params("paper").finetune.epochs_per_task == {"mrpc": 5.0}
    assert c.finetune.epochs_per_task == {} and c.finetune.lr_per_task == {"cola": 1e-4}
    assert load_params("mini").finetune.epochs_per_task == {}
