"""Loading a profile: ``params/<name>.yaml`` (or a path), its ``extends`` chain merged, overrides applied, then
built and checked into a frozen :class:`~dwt_lib.config.schema.Config` (:mod:`dwt_lib.config.schema`, whose
builder calls the value rules of :mod:`dwt_lib.config.rules`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

from dwt_lib.config.schema import Config, _build, _set_dotted
from dwt_lib.core.errors import ConfigError
from dwt_lib.core.paths import PARAMS_DIR

MAX_PROFILE_BYTES = 1 << 20     # a profile is a few KB; reading stops here (``--profile /dev/zero`` never ends)


def resolve_params_path(name_or_path: str | Path) -> Path:
    """``smoke`` -> ``params/smoke.yaml``; an existing path is returned as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return PARAMS_DIR / f"{name_or_path}.yaml"


def _read_text(path: Path, chain: tuple[Path, ...]) -> str:
    """The profile's text: a regular file of at most :data:`MAX_PROFILE_BYTES`, UTF-8 (one ConfigError otherwise)."""
    where = f"{chain[-1]}: extends: " if chain else ""
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise ConfigError(f"{where}{path}: {what}, not a params file; give a profile name (e.g. smoke) or the "
                          f"path of a YAML file")
    with open(path, "rb") as f:                  # bounded: a device or a huge file is not read to the end
        data = f.read(MAX_PROFILE_BYTES + 1)
    if len(data) > MAX_PROFILE_BYTES:
        raise ConfigError(f"{where}{path}: larger than {MAX_PROFILE_BYTES >> 20} MB, not a params file; give a "
                          f"profile name (e.g. smoke) or the path of a YAML profile")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}{path}: not UTF-8 text (at byte offset {e.start}); save the params file as UTF-8") from None


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    if not path.exists():
        avail = ", ".join(sorted(q.stem for q in PARAMS_DIR.glob("*.yaml")))
        where = f"{chain[-1]}: extends: " if chain else ""
        raise ConfigError(f"{where}params file not found: {path} (profiles in {PARAMS_DIR}: {avail})")
    if path.resolve() in [c.resolve() for c in chain]:
        raise ConfigError(f"{path}: extends: cycle through {' -> '.join(map(str, chain))}")
    text = _read_text(path, chain)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if raw is None:
        raise ConfigError(f"{path}: empty file; write a profile there (e.g. 'extends: mini' and your changes)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: extends: expected one profile name or path (e.g. 'extends: smoke'), "
                          f"got {parent!r}")
    ppath = resolve_params_path(parent) if not Path(str(parent)).is_absolute() else Path(parent)
    if not ppath.exists() and not Path(str(parent)).suffix:
        ppath = path.parent / f"{parent}.yaml"
    base = _read_yaml(ppath, chain + (path,))
    return _merge(base, raw)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in _REPLACE_WHOLE:
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


# Notebook 06's arms (studies.beyond) too: a profile that lists arms lists all it runs (`beyond: {}`: none).
# Schedule specs replace as a whole: merging {kind: linear} into {kind: constant, value: 1}
# would leave a stray "value" key. Per-task maps too: a child's `epochs_per_task: {}` means "no task
# differs", not "keep the parent's MRPC entry".
_REPLACE_WHOLE = {"alpha_soft", "temperature", "epochs_per_task", "lr_per_task", "max_train_examples_per_task",
                  "max_seq_length_per_task", "target", "init", "schedule", "beyond"}


def load_params(name_or_path: str | Path = "smoke", overrides: Optional[dict] = None) -> Config:
    """Load a profile (name like ``smoke`` or a path to a YAML file) into a frozen :class:`Config`.

    ``overrides`` maps dotted keys to values (``{"pretrain.max_steps": 10}``) and is applied
    after ``extends`` is resolved. Unknown keys, wrong types and impossible values raise
    :class:`ConfigError` with the file and key path.
    """
    if not str(name_or_path).strip():
        raise ConfigError("--profile is empty; give a profile name (smoke, mini, paper, ...) or a YAML path")
    path = resolve_params_path(name_or_path)
    raw = _read_yaml(path)
    raw.setdefault("profile", path.stem)
    src = _display(path)
    if overrides:
        for k, v in overrides.items():
            try:
                _set_dotted(raw, k, v, "overrides")
            except ConfigError:
                raise ConfigError(f"overrides: {k}: unknown key path (profile {src})") from None
        src = f"{src} (with overrides {sorted(overrides)})"
    return _build(Config, raw, src, "")


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PARAMS_DIR.parent))
    except ValueError:
        return str(path)


def config_from_dict(d: dict, src: str = "<config.json>") -> Config:
    """Rebuild (and re-validate) a :class:`Config` from :meth:`Config.to_dict` output."""
    return _build(Config, dict(d), src, "")
