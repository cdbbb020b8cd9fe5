"""Layer 1, config: a profile's schema, loader and value rules, and the tables it is checked against, as plain
data (model sizes, GLUE tasks, arm kinds and run names, schedules). No torch, no transformers:
``import dwt_lib.config`` stays light (tests/test_layers.py checks it)."""
from dwt_lib.config.load import config_from_dict, load_params  # noqa: F401
from dwt_lib.config.schema import Config  # noqa: F401
from dwt_lib.core.errors import ConfigError  # noqa: F401
