"""Where each named data source is read from: the sample shipped with the package, a mirror, or the Hub.

A profile names every source (pre-training corpora, the GLUE source, a tokenizer) by Hub id
(``wikimedia/wikipedia``, ``nyu-mll/glue``, ``google-bert/bert-base-uncased``), or by
``sample:<path>`` for the small sample inside the package (``dwt_lib/sample_data/<path>``, see its
README). One rule resolves them all:

1. ``sample:<path>`` reads ``dwt_lib/sample_data/<path>`` and nothing else. Only a profile that names
   the sample reads it (``smoke``, the tests), so a subset never stands in silently for a full dataset.
2. A Hub id reads ``$DWT_DATA_DIR/<id>`` when that folder exists: a mirror laid out by Hub id
   (``DWT_DATA_DIR`` defaults to ``data/`` in the repository).
3. Else a corpus that names a ``mirror`` stand-in reads ``$DWT_DATA_DIR/<mirror>`` when it exists: a
   *different* dataset that stands in offline (the profile says how it differs).
4. Else the Hub.

Local folders come before the Hub so that a machine with a mirror reproduces without a network and
without multi-GB downloads. What was read is recorded (:func:`describe_sources`) in the data cache's
``stats.json`` and in every result file, and the data cache hash keys on it (:func:`text_identity`),
since a stand-in and the Hub dataset give different text.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dwt_lib.core import paths, readonly
from dwt_lib.config.schema import BYTE_TOKENIZER, TRAINED_TOKENIZER
from dwt_lib.core.errors import DataSourceError

SAMPLE_DIR = paths.SAMPLE_DIR
SAMPLE_PREFIX = "sample:"


def needs_source(dc) -> bool:
    """Whether ``data.tokenizer`` names a tokenizer to read (a Hub id or ``sample:``), not one made here."""
    return dc.tokenizer not in (TRAINED_TOKENIZER, BYTE_TOKENIZER)


@dataclass(frozen=True)
class Source:
    """Where one named source resolves. ``kind`` is ``sample``, ``mirror`` or ``hub``; ``where`` is the
    folder to read (sample, mirror) or the Hub id; ``read`` names the dataset actually read, independent
    of the machine: the Hub id (read from the Hub or from a mirror copy of it), the stand-in's folder
    under the mirror, or ``sample:<path>``; ``tried`` lists the folders looked at, in order."""
    name: str
    kind: str
    where: str
    read: str
    stand_in: bool
    tried: tuple[str, ...]

    def record(self) -> dict:
        """JSON-able summary for stats and result files (no absolute path of this machine)."""
        return {"id": self.name, "kind": self.kind, "read": self.read, "stand_in": self.stand_in}


def resolve_source(name: str, mirror: Optional[str] = None) -> Source:
    """Resolve ``name`` (a Hub id or ``sample:<path>``; ``mirror``: an optional stand-in folder) by
    the module's rule. Looks at folders only: never contacts the Hub and never raises."""
    if name.startswith(SAMPLE_PREFIX):
        folder = SAMPLE_DIR / name[len(SAMPLE_PREFIX):]
        return Source(name, "sample", str(folder), name, False, (str(folder),))
    root = paths.data_root()
    candidates = [(root / name, name, False)] + ([(root / mirror, mirror, True)] if mirror else [])
    for folder, read, stand_in in candidates:
        if folder.is_dir():
            return Source(name, "mirror", str(folder), read, stand_in, tuple(str(c[0]) for c in candidates))
    return Source(name, "hub", name, name, False, tuple(str(c[0]) for c in candidates))


def resolve_corpus(corpus) -> Source:
    """Where a :class:`~dwt_lib.config.CorpusSource` resolves (its ``id``, then its ``mirror`` stand-in)."""
    return resolve_source(corpus.id, getattr(corpus, "mirror", None))


def resolve(name: str) -> str:
    """The folder ``name`` resolves to, or ``name`` unchanged when it is to be read from the Hub."""
    return resolve_source(name).where


def text_identity(corpus) -> str:
    """What determines a corpus's text besides its config: the dataset read (``read``). The Hub and a
    mirror copy of the same id give the same string; a stand-in or the sample give their own."""
    return identity_of(resolve_corpus(corpus).record())


def identity_of(rec: dict) -> str:
    """:func:`text_identity` from a :meth:`Source.record` (or a :func:`describe_sources` row)."""
    return f"{rec['kind'] if rec['kind'] == 'sample' else ('stand-in' if rec['stand_in'] else 'id')}:{rec['read']}"


def recorded_sources(cfg) -> list[dict]:
    """Read-only mode: the :func:`describe_sources` rows recorded when the profile's registry was exported (the
    data was read then, with the mirror; now nothing is read), each ``location`` saying so."""
    rows = readonly.manifest(cfg.profile).get("sources") or []
    return [dict(r, location=f"{r.get('location', '')} (at export; now: the export)") for r in rows]


def pinned_reads(cfg) -> Optional[list[str]]:
    """Read-only mode: each corpus's :func:`text_identity` as recorded at export (a corpus the export does not
    record: as resolved here), so the processed data and the runs keep the ids they were trained under although
    no mirror is present. None outside read-only mode."""
    if not readonly.enabled():
        return None
    rec = {(r.get("id"), r.get("mirror")): identity_of(r) for r in readonly.manifest(cfg.profile).get("sources") or []
           if r.get("role") == "corpus"}
    return [rec.get((c.id, getattr(c, "mirror", None))) or text_identity(c) for c in cfg.data.corpora]


def _offline() -> bool:
    return any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
               for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def sample_contents() -> list[str]:
    """The sources the sample holds, as ``sample:<org>/<name>`` (laid out like Hub ids, two levels)."""
    return [SAMPLE_PREFIX + p.relative_to(SAMPLE_DIR).as_posix()
            for p in sorted(SAMPLE_DIR.glob("*/*")) if p.is_dir()]


def require(src: Source, what: str, repo_type: str = "dataset") -> Source:
    """Check ``src`` can be read before any work: the folder exists, or the Hub is allowed and has the repo.

    Raises :class:`DataSourceError` naming the id, every folder tried, why the Hub was not used and
    the two fixes (a mirror laid out by Hub id in ``DWT_DATA_DIR``, or Hub access)."""
    if src.kind == "sample":
        if Path(src.where).is_dir():
            return src
        raise DataSourceError(
            f"{what} {src.name!r} is not in the sample shipped with dwt_lib (no folder {src.where}); "
            f"the sample holds {', '.join(sample_contents()) or 'nothing (is the package installed from a full clone?)'}. "
            f"Name one of those, or a Hub id (read from DWT_DATA_DIR or the Hub).")
    if src.kind == "mirror":
        return src
    why = "the Hub is disabled (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if _offline() else None
    if why is None:
        try:
            from huggingface_hub import repo_exists
            if not repo_exists(src.name, repo_type=repo_type):
                why = f"the Hub has no {repo_type} repo {src.name!r}"
        except Exception as e:  # no network, DNS, auth: all mean "not readable from here"
            why = f"the Hub is unreachable ({type(e).__name__}: {e})"
    if why:
        tried = " or ".join(src.tried)
        raise DataSourceError(
            f"{what} {src.name!r} is not available: no local folder {tried} (DWT_DATA_DIR={paths.data_root()}) "
            f"and {why}. Either set DWT_DATA_DIR to an offline mirror laid out by Hub id (a folder holding "
            f"{src.name}/, see the README's 'Offline data'), or allow Hub access (unset HF_HUB_OFFLINE; "
            f"log in if the repo is gated).")
    return src


def require_source(name: str, what: str, repo_type: str = "dataset", mirror: Optional[str] = None) -> str:
    """:func:`require` on :func:`resolve_source`; returns the folder or Hub id to read."""
    return require(resolve_source(name, mirror), what, repo_type).where


# ----------------------------------------------------------------------------- reporting

def _display(src: Source) -> str:
    if src.kind == "sample":
        return f"<dwt_lib>/sample_data/{src.read[len(SAMPLE_PREFIX):]}"
    if src.kind == "mirror":
        return f"$DWT_DATA_DIR/{src.read}"
    return f"Hub: {src.name}"


def describe_sources(cfg) -> list[dict]:
    """One record per source a config reads (corpora, tokenizer unless trained, GLUE): the role, what the
    profile names (id, config, split), its kind (sample / mirror / hub), the dataset read and whether it
    is a stand-in. Written into the data stats and every result file; shown by notebook 01. In read-only mode:
    the rows recorded at export (:func:`recorded_sources`)."""
    if readonly.enabled():
        return recorded_sources(cfg)
    rows = []
    for c in cfg.data.corpora:
        s = resolve_corpus(c)
        rows.append({"role": "corpus", **s.record(), "config": c.config, "split": c.split,
                     "mirror": c.mirror, "location": _display(s)})
    if needs_source(cfg.data):
        s = resolve_source(cfg.data.tokenizer)
        rows.append({"role": "tokenizer", **s.record(), "location": _display(s)})
    s = resolve_source(cfg.finetune.source)
    rows.append({"role": "GLUE", **s.record(), "location": _display(s)})
    return rows


def sources_table(cfg):
    """:func:`describe_sources` as a DataFrame (one row per source)."""
    import pandas as pd
    cols = ["role", "id", "config", "split", "kind", "read", "stand_in", "location"]
    blank = lambda v: "" if v is None else v
    return pd.DataFrame([{k: blank(r.get(k)) for k in cols} for r in describe_sources(cfg)], columns=cols)
