"""Stable hashes of plain data: what a run's identity and a data cache's key are made of."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def stable_hash(obj: Any, n: int = 10) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no whitespace), first ``n`` hex digits."""
    s = json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(s.encode()).hexdigest()[:n]


def jsonable(x: Any) -> Any:
    """Plain JSON types: dataclasses to dicts, tuples to lists, keys to strings."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if dataclasses.is_dataclass(x):
        return jsonable(dataclasses.asdict(x))
    return x
