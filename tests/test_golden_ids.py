"""Golden run ids and data-cache hashes: literal values computed on commit 8af29ec, before issues 23 and 24
changed anything. A refactor (modules moved into layers) or a new config key with its default must leave every
one of them as it is: a changed id retrains every run of a profile, a changed data hash rebuilds its cache, and
a module that computes the repository root from another folder silently stops finding a mirror linked at
``<repo>/data`` (then the mini stand-ins are not read and all its ids change).

Each case runs in a fresh interpreter on a *copy* of the package (``dwt_lib/`` and ``params/`` copied into a
temporary repository), so the repository root is whatever the code computes from its own files, and:

- ``no_mirror``: ``DWT_DATA_DIR`` points at an empty folder (every Hub id resolves to the Hub);
- ``env_mirror``: ``DWT_DATA_DIR`` points at the offline mirror (skipped when no mirror is found);
- ``linked_mirror``: no ``DWT_DATA_DIR``; the mirror is linked at ``<temporary repo>/data`` (skipped likewise).

Per profile (smoke, mini, gpu, paper): the data hash, the config hash, the id of every run ``dwt plan`` and the
studies name (``all_run_names``), the fine-tuning ids of the student's first seed on every task at every snapshot
(literal), and a digest of every fine-tuning id (every run x snapshot x task x seed, at ``finetune.lr`` and at
each ``finetune.lr_grid`` learning rate: the lr selection's runs).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROFILES = ("smoke", "mini", "gpu", "paper")

PROBE = r"""
import hashlib, json, sys
import dwt_lib
from dwt_lib.config import load_params
from dwt_lib.data import data_hash
from dwt_lib.studies import all_run_names, finetune_run, named_run

assert dwt_lib.__file__.startswith(sys.argv[1]), ("probe imported the wrong package", dwt_lib.__file__)
out = {}
for profile in sys.argv[2].split(","):
    cfg = load_params(profile)
    names = all_run_names(cfg)
    ft = cfg.finetune
    fracs = list(cfg.pretrain.snapshot_fractions)
    student_ft = {f"{t}@{fr:.2f}": finetune_run(cfg, "student", t, ft.seeds[0], fr).id
                  for t in ft.tasks for fr in fracs}
    variants = [cfg] + [cfg.replace(**{"finetune.lr_per_task": {t: lr for t in ft.tasks}}) for lr in ft.lr_grid]
    every = sorted(f"{i}|{n}|{fr}|{t}|{s}|{finetune_run(c, n, t, s, fr).id}"
                   for i, c in enumerate(variants) for n in names for fr in fracs for t in ft.tasks for s in ft.seeds)
    out[profile] = {"data_hash": data_hash(cfg.data), "config_hash": cfg.short_hash(),
                    "runs": {n: named_run(cfg, n).id for n in names},
                    "student_finetune": student_ft, "finetune_count": len(every),
                    "finetune_digest": hashlib.sha256("\n".join(every).encode()).hexdigest()[:16]}
print(json.dumps(out, sort_keys=True))
"""


def _mirror() -> Path | None:
    """The offline mirror, if one is at hand: ``$DWT_DATA_DIR``, ``../shared/data`` beside the repository, or
    ``<repo>/data`` (a link to it); a folder counts when it holds the mini stand-ins."""
    for c in (os.environ.get("DWT_DATA_DIR"), REPO.parent / "shared" / "data", REPO / "data"):
        if c and (Path(c) / "corpora" / "wikipedia-en").is_dir():
            return Path(c).resolve()
    return None


def _compute(tmp_path: Path, case: str) -> dict:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "dwt_lib", repo / "dwt_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "params", repo / "params")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DWT_")}
    env.update(PYTHONPATH=str(repo), DWT_OUTPUTS_DIR=str(tmp_path / "outputs"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    if case == "no_mirror":
        (tmp_path / "empty").mkdir()
        env["DWT_DATA_DIR"] = str(tmp_path / "empty")
    else:
        mirror = _mirror()
        if mirror is None:
            pytest.skip("no offline mirror at $DWT_DATA_DIR, ../shared/data or <repo>/data")
        if case == "env_mirror":
            env["DWT_DATA_DIR"] = str(mirror)
        else:
            (repo / "data").symlink_to(mirror)
    p = subprocess.run([sys.executable, "-c", PROBE, str(repo), ",".join(PROFILES)], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


# Computed on 8af29ec; the mirror's mini ids are those of the committed outputs/mini registry (checked). The
# random-init control run (issue 20) and its fine-tuning runs were added later: every earlier id unchanged (checked).
NO_MIRROR = {
 "gpu": {
  "config_hash": "212db0a84d",
  "data_hash": "2bf1fbc474b2",
  "finetune_count": 1080,
  "finetune_digest": "b7f365a84184ef7b",
  "runs": {
   "beyond-aware": "dwt-b37e32b45d",
   "beyond-grow": "dwt-a461e59224",
   "beyond-ki": "dwt-6d85ac7eca",
   "beyond-smoothed": "dwt-139c44567c",
   "beyond-tau2-extremely_weak": "dwt-7b8b938142",
   "beyond-tau2-weak": "dwt-b8c994e011",
   "dwt-extremely_weak": "dwt-27e031b2c9",
   "dwt-very_weak": "dwt-746d349e72",
   "dwt-weak": "dwt-476ad9cd11",
   "random-init": "student-589bdb17cc",
   "remap-weak": "dwt-2763ce5842",
   "soft-decay": "dwt-23da104b20",
   "soft-normal": "dwt-476ad9cd11",
   "soft-strong": "dwt-321e7b0490",
   "student": "student-140d7df2a9",
   "teacher-extremely_weak": "teacher-725c5261a0",
   "teacher-very_weak": "teacher-7b6dc3b7a3",
   "teacher-weak": "teacher-f3a7615825"
  },
  "student_finetune": {
   "cola@0.25": "finetune-573d8bc14a",
   "cola@0.50": "finetune-2b41b01e89",
   "cola@0.75": "finetune-9724842775",
   "cola@1.00": "finetune-39c953e714",
   "mrpc@0.25": "finetune-4c25a935fd",
   "mrpc@0.50": "finetune-64425dcefa",
   "mrpc@0.75": "finetune-56e476c743",
   "mrpc@1.00": "finetune-5020aba795",
   "rte@0.25": "finetune-cb211bb42d",
   "rte@0.50": "finetune-dd58e14837",
   "rte@0.75": "finetune-5c41acab7b",
   "rte@1.00": "finetune-8f5d296d1a",
   "sst2@0.25": "finetune-c444f3cc43",
   "sst2@0.50": "finetune-4c925ea1e0",
   "sst2@0.75": "finetune-d3844b4919",
   "sst2@1.00": "finetune-ead8007c88",
   "stsb@0.25": "finetune-43c268fa7b",
   "stsb@0.50": "finetune-55b9366cea",
   "stsb@0.75": "finetune-5c11cdc994",
   "stsb@1.00": "finetune-92871a8745"
  }
 },
 "mini": {
  "config_hash": "4e2b330948",
  "data_hash": "23cda595e463",
  "finetune_count": 2520,
  "finetune_digest": "6aa7c48d42013b56",
  "runs": {
   "beyond-aware": "dwt-757234c942",
   "beyond-grow": "dwt-42012f56b0",
   "beyond-ki": "dwt-50343aed3b",
   "beyond-smoothed": "dwt-fb63b12f68",
   "beyond-tau2-extremely_weak": "dwt-fe675d4d21",
   "beyond-tau2-weak": "dwt-41846e94e2",
   "dwt-extremely_weak": "dwt-e47ebb7215",
   "dwt-very_weak": "dwt-a4b49fa1e3",
   "dwt-weak": "dwt-f8e0780592",
   "dwt-weak:s43": "dwt-d31dfc99e4",
   "random-init": "student-b94fa4485a",
   "remap-weak": "dwt-fc125651b2",
   "soft-decay": "dwt-e1dc41cb19",
   "soft-normal": "dwt-f8e0780592",
   "soft-normal:s43": "dwt-d31dfc99e4",
   "soft-strong": "dwt-60bdbe7312",
   "student": "student-992fa10709",
   "student:s43": "student-3e08960e1b",
   "teacher-extremely_weak": "teacher-278e34aafe",
   "teacher-very_weak": "teacher-297fdf8db1",
   "teacher-weak": "teacher-6f0f6f51f2"
  },
  "student_finetune": {
   "cola@0.50": "finetune-51745117fc",
   "cola@1.00": "finetune-4eb56f21fa",
   "mrpc@0.50": "finetune-bd0dac044f",
   "mrpc@1.00": "finetune-940d6e8d8d",
   "rte@0.50": "finetune-73cb0fd689",
   "rte@1.00": "finetune-d9432c9c0d",
   "sst2@0.50": "finetune-d118901705",
   "sst2@1.00": "finetune-6c487c369c",
   "stsb@0.50": "finetune-6c645f3d55",
   "stsb@1.00": "finetune-2f2ce62345"
  }
 },
 "paper": {
  "config_hash": "4392483173",
  "data_hash": "430deac33e7d",
  "finetune_count": 504,
  "finetune_digest": "95e5a18b8d7af0e9",
  "runs": {
   "beyond-aware": "dwt-aceee12ccd",
   "beyond-grow": "dwt-65df2a55c1",
   "beyond-ki": "dwt-e4ee945f54",
   "beyond-smoothed": "dwt-a78b92680a",
   "beyond-tau2-extremely_weak": "dwt-4eba5e2e2c",
   "beyond-tau2-weak": "dwt-4a1f0c86fc",
   "dwt-extremely_weak": "dwt-353ed1a592",
   "dwt-very_weak": "dwt-6e1f14ac67",
   "dwt-weak": "dwt-7938e5534e",
   "random-init": "student-d35d38cc17",
   "remap-weak": "dwt-a4c9f5d6c8",
   "soft-decay": "dwt-015a5477be",
   "soft-normal": "dwt-7938e5534e",
   "soft-strong": "dwt-03f6331371",
   "student": "student-0a8fb795ac",
   "teacher-extremely_weak": "teacher-8835fc32d4",
   "teacher-very_weak": "teacher-dfbb1ab53c",
   "teacher-weak": "teacher-70cd05f166"
  },
  "student_finetune": {
   "cola@0.25": "finetune-d58ea64134",
   "cola@0.50": "finetune-d6f6d53906",
   "cola@0.75": "finetune-c624fcf4f7",
   "cola@1.00": "finetune-bc0bc1dc5c",
   "mnli@0.25": "finetune-1f9426f18e",
   "mnli@0.50": "finetune-4e8739d0de",
   "mnli@0.75": "finetune-788a2e7882",
   "mnli@1.00": "finetune-697ce9d6e1",
   "mrpc@0.25": "finetune-2958c847c3",
   "mrpc@0.50": "finetune-17d9160b3a",
   "mrpc@0.75": "finetune-45839e5848",
   "mrpc@1.00": "finetune-c3d99826aa",
   "qnli@0.25": "finetune-5c918b2d33",
   "qnli@0.50": "finetune-9bb4f3cbf0",
   "qnli@0.75": "finetune-7263b19673",
   "qnli@1.00": "finetune-f42391c107",
   "qqp@0.25": "finetune-ab86cf1e9e",
   "qqp@0.50": "finetune-335d3c9435",
   "qqp@0.75": "finetune-768425439d",
   "qqp@1.00": "finetune-25ea62e9f1",
   "sst2@0.25": "finetune-2b58bdd83d",
   "sst2@0.50": "finetune-af2a256843",
   "sst2@0.75": "finetune-3472a28ca3",
   "sst2@1.00": "finetune-ab13a89082",
   "stsb@0.25": "finetune-f32ceb5279",
   "stsb@0.50": "finetune-9fa437a94d",
   "stsb@0.75": "finetune-319e904b21",
   "stsb@1.00": "finetune-07e1abac38"
  }
 },
 "smoke": {
  "config_hash": "082978be28",
  "data_hash": "fa8e8bf97f94",
  "finetune_count": 76,
  "finetune_digest": "ad129da57fca310e",
  "runs": {
   "beyond-aware": "dwt-251c5bc208",
   "beyond-grow": "dwt-a3e3d2a65a",
   "beyond-ki": "dwt-9d07acd212",
   "beyond-smoothed": "dwt-e4adc07700",
   "beyond-tau2-extremely_weak": "dwt-3fb1a413cf",
   "beyond-tau2-weak": "dwt-1be48f9026",
   "dwt-extremely_weak": "dwt-047e7c4a6d",
   "dwt-very_weak": "dwt-6896c16127",
   "dwt-weak": "dwt-812be521b2",
   "random-init": "student-6ca1e8d36c",
   "remap-weak": "dwt-0709376432",
   "soft-decay": "dwt-e9e8abc371",
   "soft-normal": "dwt-812be521b2",
   "soft-strong": "dwt-9cea5e7c0b",
   "student": "student-bcb4e7df58",
   "student:s43": "student-26b09719ef",
   "teacher-extremely_weak": "teacher-873d48bdf0",
   "teacher-very_weak": "teacher-4caedb2761",
   "teacher-weak": "teacher-fd3a7e2763"
  },
  "student_finetune": {
   "mrpc@0.50": "finetune-1e1fdc2e6c",
   "mrpc@1.00": "finetune-fb914765bb",
   "sst2@0.50": "finetune-6e8ed59239",
   "sst2@1.00": "finetune-32dc1c4d55"
  }
 }
}

MIRROR = {
 "gpu": {
  "config_hash": "212db0a84d",
  "data_hash": "0909aa14e310",
  "finetune_count": 1080,
  "finetune_digest": "2ca5839aba5c1a6d",
  "runs": {
   "beyond-aware": "dwt-e5d9da7791",
   "beyond-grow": "dwt-ccd2b22ec9",
   "beyond-ki": "dwt-e020750da8",
   "beyond-smoothed": "dwt-1bdc7e3793",
   "beyond-tau2-extremely_weak": "dwt-fb4f457713",
   "beyond-tau2-weak": "dwt-32eaf71550",
   "dwt-extremely_weak": "dwt-1c72f05435",
   "dwt-very_weak": "dwt-ae648a4821",
   "dwt-weak": "dwt-853229a399",
   "random-init": "student-c348783f5f",
   "remap-weak": "dwt-d0db4e91f5",
   "soft-decay": "dwt-a677fd96b2",
   "soft-normal": "dwt-853229a399",
   "soft-strong": "dwt-abbebb4d0c",
   "student": "student-29d7eca463",
   "teacher-extremely_weak": "teacher-de81a47afa",
   "teacher-very_weak": "teacher-df044ceb13",
   "teacher-weak": "teacher-899007522a"
  },
  "student_finetune": {
   "cola@0.25": "finetune-9140dead42",
   "cola@0.50": "finetune-191078da0d",
   "cola@0.75": "finetune-bfd8d17dc5",
   "cola@1.00": "finetune-b69ad6eeb9",
   "mrpc@0.25": "finetune-1ed8a23813",
   "mrpc@0.50": "finetune-8e420e885b",
   "mrpc@0.75": "finetune-7e4b8b22de",
   "mrpc@1.00": "finetune-867891e752",
   "rte@0.25": "finetune-ad82afac3f",
   "rte@0.50": "finetune-716902c061",
   "rte@0.75": "finetune-8506866d47",
   "rte@1.00": "finetune-4c26a6a883",
   "sst2@0.25": "finetune-53ffa98160",
   "sst2@0.50": "finetune-8fe4187400",
   "sst2@0.75": "finetune-d8f88834e7",
   "sst2@1.00": "finetune-60a7982638",
   "stsb@0.25": "finetune-5be5ea4f12",
   "stsb@0.50": "finetune-6e979d11a9",
   "stsb@0.75": "finetune-672f58c077",
   "stsb@1.00": "finetune-0ffb08526b"
  }
 },
 "mini": {
  "config_hash": "4e2b330948",
  "data_hash": "eb0a50c79e6e",
  "finetune_count": 2520,
  "finetune_digest": "3e88928613f7ca9d",
  "runs": {
   "beyond-aware": "dwt-c9b27baf0b",
   "beyond-grow": "dwt-a298c70eb7",
   "beyond-ki": "dwt-55bc47a55a",
   "beyond-smoothed": "dwt-1e38569b48",
   "beyond-tau2-extremely_weak": "dwt-91cf4c1bc1",
   "beyond-tau2-weak": "dwt-c5b71d4a63",
   "dwt-extremely_weak": "dwt-7e0ee51e8a",
   "dwt-very_weak": "dwt-c517a83adb",
   "dwt-weak": "dwt-345cab09d6",
   "dwt-weak:s43": "dwt-7861935778",
   "random-init": "student-910ae0e3f0",
   "remap-weak": "dwt-51253d5416",
   "soft-decay": "dwt-b0acb0bc22",
   "soft-normal": "dwt-345cab09d6",
   "soft-normal:s43": "dwt-7861935778",
   "soft-strong": "dwt-8945441cbe",
   "student": "student-a0b175231e",
   "student:s43": "student-c8eb4dbb7e",
   "teacher-extremely_weak": "teacher-285fdcce73",
   "teacher-very_weak": "teacher-ea9d3bc84c",
   "teacher-weak": "teacher-d0ba5172d1"
  },
  "student_finetune": {
   "cola@0.50": "finetune-44690f8ca2",
   "cola@1.00": "finetune-72adc132bb",
   "mrpc@0.50": "finetune-8151c32086",
   "mrpc@1.00": "finetune-adfb411cde",
   "rte@0.50": "finetune-bee11559a6",
   "rte@1.00": "finetune-6f5702bc81",
   "sst2@0.50": "finetune-29f5576345",
   "sst2@1.00": "finetune-66988b5805",
   "stsb@0.50": "finetune-d26b386fea",
   "stsb@1.00": "finetune-a2a80c313a"
  }
 },
 "paper": {
  "config_hash": "4392483173",
  "data_hash": "430deac33e7d",
  "finetune_count": 504,
  "finetune_digest": "95e5a18b8d7af0e9",
  "runs": {
   "beyond-aware": "dwt-aceee12ccd",
   "beyond-grow": "dwt-65df2a55c1",
   "beyond-ki": "dwt-e4ee945f54",
   "beyond-smoothed": "dwt-a78b92680a",
   "beyond-tau2-extremely_weak": "dwt-4eba5e2e2c",
   "beyond-tau2-weak": "dwt-4a1f0c86fc",
   "dwt-extremely_weak": "dwt-353ed1a592",
   "dwt-very_weak": "dwt-6e1f14ac67",
   "dwt-weak": "dwt-7938e5534e",
   "random-init": "student-d35d38cc17",
   "remap-weak": "dwt-a4c9f5d6c8",
   "soft-decay": "dwt-015a5477be",
   "soft-normal": "dwt-7938e5534e",
   "soft-strong": "dwt-03f6331371",
   "student": "student-0a8fb795ac",
   "teacher-extremely_weak": "teacher-8835fc32d4",
   "teacher-very_weak": "teacher-dfbb1ab53c",
   "teacher-weak": "teacher-70cd05f166"
  },
  "student_finetune": {
   "cola@0.25": "finetune-d58ea64134",
   "cola@0.50": "finetune-d6f6d53906",
   "cola@0.75": "finetune-c624fcf4f7",
   "cola@1.00": "finetune-bc0bc1dc5c",
   "mnli@0.25": "finetune-1f9426f18e",
   "mnli@0.50": "finetune-4e8739d0de",
   "mnli@0.75": "finetune-788a2e7882",
   "mnli@1.00": "finetune-697ce9d6e1",
   "mrpc@0.25": "finetune-2958c847c3",
   "mrpc@0.50": "finetune-17d9160b3a",
   "mrpc@0.75": "finetune-45839e5848",
   "mrpc@1.00": "finetune-c3d99826aa",
   "qnli@0.25": "finetune-5c918b2d33",
   "qnli@0.50": "finetune-9bb4f3cbf0",
   "qnli@0.75": "finetune-7263b19673",
   "qnli@1.00": "finetune-f42391c107",
   "qqp@0.25": "finetune-ab86cf1e9e",
   "qqp@0.50": "finetune-335d3c9435",
   "qqp@0.75": "finetune-768425439d",
   "qqp@1.00": "finetune-25ea62e9f1",
   "sst2@0.25": "finetune-2b58bdd83d",
   "sst2@0.50": "finetune-af2a256843",
   "sst2@0.75": "finetune-3472a28ca3",
   "sst2@1.00": "finetune-ab13a89082",
   "stsb@0.25": "finetune-f32ceb5279",
   "stsb@0.50": "finetune-9fa437a94d",
   "stsb@0.75": "finetune-319e904b21",
   "stsb@1.00": "finetune-07e1abac38"
  }
 },
 "smoke": {
  "config_hash": "082978be28",
  "data_hash": "fa8e8bf97f94",
  "finetune_count": 76,
  "finetune_digest": "ad129da57fca310e",
  "runs": {
   "beyond-aware": "dwt-251c5bc208",
   "beyond-grow": "dwt-a3e3d2a65a",
   "beyond-ki": "dwt-9d07acd212",
   "beyond-smoothed": "dwt-e4adc07700",
   "beyond-tau2-extremely_weak": "dwt-3fb1a413cf",
   "beyond-tau2-weak": "dwt-1be48f9026",
   "dwt-extremely_weak": "dwt-047e7c4a6d",
   "dwt-very_weak": "dwt-6896c16127",
   "dwt-weak": "dwt-812be521b2",
   "random-init": "student-6ca1e8d36c",
   "remap-weak": "dwt-0709376432",
   "soft-decay": "dwt-e9e8abc371",
   "soft-normal": "dwt-812be521b2",
   "soft-strong": "dwt-9cea5e7c0b",
   "student": "student-bcb4e7df58",
   "student:s43": "student-26b09719ef",
   "teacher-extremely_weak": "teacher-873d48bdf0",
   "teacher-very_weak": "teacher-4caedb2761",
   "teacher-weak": "teacher-fd3a7e2763"
  },
  "student_finetune": {
   "mrpc@0.50": "finetune-1e1fdc2e6c",
   "mrpc@1.00": "finetune-fb914765bb",
   "sst2@0.50": "finetune-6e8ed59239",
   "sst2@1.00": "finetune-32dc1c4d55"
  }
 }
}

GOLDEN = {"no_mirror": NO_MIRROR, "env_mirror": MIRROR, "linked_mirror": MIRROR}


@pytest.mark.parametrize("case", ["no_mirror", "env_mirror", "linked_mirror"])
def test_golden_ids(tmp_path, case):
    got = _compute(tmp_path, case)
    want = GOLDEN[case]
    for profile in PROFILES:
        g, w = got[profile], want[profile]
        assert g["data_hash"] == w["data_hash"], (case, profile, "data hash")
        assert g["runs"] == w["runs"], (case, profile, "pre-training run ids")
        assert g["student_finetune"] == w["student_finetune"], (case, profile, "student fine-tuning ids")
        assert (g["finetune_count"], g["finetune_digest"]) == (w["finetune_count"], w["finetune_digest"]), \
            (case, profile, "fine-tuning ids")
        assert g["config_hash"] == w["config_hash"], (case, profile, "config hash (provenance)")


def test_cases_differ_where_they_should():
    """The golden values are not vacuous: the mini stand-ins change mini's data hash and every run id with it;
    the sample-only smoke profile and the paper (no stand-ins) read the same data in every case."""
    a, b = NO_MIRROR, MIRROR
    assert a["mini"]["data_hash"] != b["mini"]["data_hash"]
    assert set(a["mini"]["runs"].values()).isdisjoint(b["mini"]["runs"].values())
    assert a["smoke"] == b["smoke"] and a["paper"] == b["paper"]
    assert len(a["mini"]["runs"]) >= 20
