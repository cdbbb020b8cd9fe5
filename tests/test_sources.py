"""Where sources are read from: the shipped sample, a mirror laid out by Hub id (or a stand-in), the Hub.

Every test builds its own mirror in a temp folder or uses the sample; only the last one (the sample
is what tools/make_sample_data.py cuts) needs the real offline mirror and skips without it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dwt_lib.core import paths
from dwt_lib.data import corpus, prepare as data, sources
from dwt_lib.core.errors import ConfigError
from dwt_lib.config.schema import CorpusSource
from dwt_lib.config.load import load_params
from dwt_lib.runs.registry import write_result

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """An empty mirror in DWT_DATA_DIR, the Hub switched off."""
    root = tmp_path / "mirror"
    root.mkdir()
    monkeypatch.setenv("DWT_DATA_DIR", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root


def test_resolution_order_id_then_stand_in_then_hub(mirror):
    assert sources.resolve_source("org/name", mirror="corpora/x").kind == "hub"
    (mirror / "corpora" / "x").mkdir(parents=True)
    s = sources.resolve_source("org/name", mirror="corpora/x")
    assert (s.kind, s.read, s.stand_in, s.where) == ("mirror", "corpora/x", True, str(mirror / "corpora/x"))
    assert s.tried == (str(mirror / "org/name"), str(mirror / "corpora/x"))
    (mirror / "org" / "name").mkdir(parents=True)                    # a copy of the Hub dataset wins
    s = sources.resolve_source("org/name", mirror="corpora/x")
    assert (s.kind, s.read, s.stand_in) == ("mirror", "org/name", False)
    assert sources.resolve("org/name") == str(mirror / "org/name") and sources.resolve("org/absent") == "org/absent"


def test_sample_is_read_only_when_named(mirror):
    (mirror / "nyu-mll" / "glue").mkdir(parents=True)
    s = sources.resolve_source("sample:nyu-mll/glue")
    assert s.kind == "sample" and Path(s.where) == sources.SAMPLE_DIR / "nyu-mll/glue" and Path(s.where).is_dir()
    assert sources.resolve_source("nyu-mll/glue").kind == "mirror"      # a Hub id never falls back to it
    assert {"sample:corpora/wikipedia-en", "sample:corpora/gutenberg-en", "sample:nyu-mll/glue",
            "sample:google-bert/bert-base-uncased"} <= set(sources.sample_contents())
    with pytest.raises(data.DataSourceError, match="sample:nyu-mll/glue") as e:
        sources.require(sources.resolve_source("sample:corpora/bookcorpus"), "pre-training corpus")
    assert "not in the sample" in str(e.value)


def test_profiles_name_sources_explicitly():
    """smoke reads only the sample; mini and paper never do (no silent subset for a full dataset)."""
    names = lambda cfg: [c.id for c in cfg.data.corpora] + [cfg.finetune.source]
    assert all(n.startswith("sample:") for n in names(load_params("smoke")))
    for p in ("mini", "paper"):
        cfg = load_params(p)
        assert not any(n.startswith("sample:") for n in names(cfg) + [cfg.data.tokenizer])
    mini = load_params("mini").data.corpora
    assert [(c.id, c.config, c.mirror) for c in mini] == [
        ("wikimedia/wikipedia", "20231101.en", "corpora/wikipedia-en"),
        ("bookcorpus/bookcorpus", "plain_text", "corpora/gutenberg-en")]
    assert all(c.mirror is None for c in load_params("paper").data.corpora)


def test_missing_source_names_id_folders_and_both_fixes(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(data.DataSourceError) as e:
        data.prepare_pretraining_data(load_params("mini"))
    msg = str(e.value)
    assert "wikimedia/wikipedia" in msg
    assert str(mirror / "wikimedia/wikipedia") in msg and str(mirror / "corpora/wikipedia-en") in msg
    assert "DWT_DATA_DIR" in msg and "HF_HUB_OFFLINE" in msg and "Hub access" in msg
    assert "/work/" not in msg.replace(str(tmp_path), "<tmp>")       # no path of the build machine
    assert not (tmp_path / "cache").exists()                            # failed before any work


def test_cache_hash_tells_stand_in_from_hub_dataset(mirror):
    dc = load_params("mini").data
    hub = data.data_hash(dc)
    for sub in ("corpora/wikipedia-en", "corpora/gutenberg-en"):
        (mirror / sub).mkdir(parents=True)
    stand_in = data.data_hash(dc)
    for sub in ("wikimedia/wikipedia", "bookcorpus/bookcorpus"):
        (mirror / sub).mkdir(parents=True)
    copy = data.data_hash(dc)
    assert stand_in != hub and copy == hub          # a mirror copy of the Hub id gives the Hub's text
    sample = load_params("smoke").data
    assert data.data_hash(sample) != data.data_hash(
        sample.__class__(**{**sample.__dict__, "corpora": tuple(
            CorpusSource(c.id.removeprefix("sample:")) for c in sample.corpora)}))


def test_sources_recorded_in_result_files(mirror, tmp_path):
    for sub in ("corpora/wikipedia-en", "corpora/gutenberg-en", "nyu-mll/glue"):
        (mirror / sub).mkdir(parents=True)
    cfg = load_params("mini")
    saved = write_result(tmp_path / "r.json", cfg, {"x": 1})
    rec = {r["role"] + ":" + r["id"]: r for r in saved["provenance"]["data_sources"]}
    wiki = rec["corpus:wikimedia/wikipedia"]
    assert (wiki["kind"], wiki["read"], wiki["stand_in"]) == ("mirror", "corpora/wikipedia-en", True)
    assert rec["GLUE:nyu-mll/glue"]["kind"] == "mirror" and not rec["GLUE:nyu-mll/glue"]["stand_in"]
    assert "Hub: " in sources.sources_table(load_params("paper")).location.iloc[0]
    smoke = sources.sources_table(load_params("smoke"))
    assert set(smoke.kind) == {"sample"} and list(smoke.role) == ["corpus", "corpus", "GLUE"]


def test_a_corpus_limit_overrides_the_global_one():
    wiki, books = (CorpusSource("sample:corpora/wikipedia-en"),
                   CorpusSource("sample:corpora/gutenberg-en", max_documents=2))
    docs = corpus.load_documents([wiki, books], max_documents=5, resolve=sources.resolve)
    keys = [d.key for d in docs]
    assert sum(k.startswith("sample:corpora/wikipedia-en#") for k in keys) == 5
    assert [k for k in keys if "gutenberg" in k] == ["sample:corpora/gutenberg-en#0", "sample:corpora/gutenberg-en#1"]


def test_bad_corpus_fields_are_config_errors():
    with pytest.raises(ConfigError, match=r"data.corpora\[0\].max_documents"):
        load_params("smoke", {"data.corpora": [{"id": "sample:corpora/wikipedia-en", "max_documents": 0}]})
    with pytest.raises(ConfigError, match=r"data.corpora\[0\].mirror"):
        load_params("smoke", {"data.corpora": [{"id": "sample:corpora/wikipedia-en", "mirror": "corpora/x"}]})


def test_sample_is_small_documented_and_has_real_label_ids():
    files = [p for p in sources.SAMPLE_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 3 * 2**20               # "a few MB at most"
    readme = (sources.SAMPLE_DIR / "README.md").read_text()
    assert "tools/make_sample_data.py" in readme and "CC BY-SA" in readme
    glue = sources.SAMPLE_DIR / "nyu-mll" / "glue"
    assert set(pq.read_table(glue / "sst2/validation-00000-of-00001.parquet").column("label").to_pylist()) == {0, 1}
    assert set(pq.read_table(glue / "rte/test-00000-of-00001.parquet").column("label").to_pylist()) == {-1}


def test_sample_is_what_the_script_cuts_from_the_mirror(tmp_path):
    real = paths.data_root()
    if not (real / "corpora/wikipedia-en").is_dir() or not (real / "nyu-mll/glue").is_dir():
        pytest.skip(f"needs the offline mirror to re-cut the sample (no corpora/ or nyu-mll/glue under {real})")
    out = tmp_path / "sample"
    subprocess.run([sys.executable, str(REPO / "tools/make_sample_data.py"), "--mirror", str(real),
                    "--out", str(out)], check=True, capture_output=True)
    shipped = sorted(p.relative_to(sources.SAMPLE_DIR) for p in sources.SAMPLE_DIR.rglob("*")
                     if p.is_file() and p.name != "README.md")
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == shipped
    for rel in shipped:
        a, b = sources.SAMPLE_DIR / rel, out / rel
        if rel.suffix == ".parquet":
            assert pq.read_table(a).equals(pq.read_table(b), check_metadata=True), rel
        else:
            assert a.read_bytes() == b.read_bytes(), rel


def test_pipeline_reads_a_stand_in_with_its_own_config_and_limits(mirror, tmp_path, monkeypatch):
    """A stand-in folder is read without the Hub dataset's config; each corpus's own limit applies; stats say so."""
    import shutil
    shutil.copytree(sources.SAMPLE_DIR / "corpora/wikipedia-en", mirror / "corpora/wiki-standin")
    monkeypatch.setenv("DWT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = load_params("smoke", {"data.corpora": [
        {"id": "org/wiki", "config": "20231101.en", "mirror": "corpora/wiki-standin"},
        {"id": "sample:corpora/gutenberg-en", "max_documents": 2}],
        "data.max_documents": 5, "data.max_sentences": None, "data.vocab_size": 300, "data.max_seq_length": 32})
    st = data.prepare_pretraining_data(cfg, num_proc=1).stats
    assert st["documents"] == 5 + 2
    assert st["sources"][0] == {"id": "org/wiki", "kind": "mirror", "read": "corpora/wiki-standin", "stand_in": True}
    assert st["sources"][1]["kind"] == "sample" and st["config"]["corpora"][0]["config"] == "20231101.en"
