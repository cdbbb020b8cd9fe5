"""Layer 1, config: a profile's schema, loader and value rules, and the tables it is checked against, as plain
data (no torch, no transformers: ``import dwt_lib.config`` stays light)."""
from dwt_lib.config.schema import Config, ConfigError, config_from_dict, load_params  # noqa: F401
