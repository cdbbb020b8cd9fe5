"""Layer 3, runs: the run registry (one folder per run identity), checkpoints, saved-model records, provenance."""
from dwt_lib.runs.registry import Run, outputs_dir  # noqa: F401
