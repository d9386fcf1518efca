"""Typed run configuration: nested dataclasses, YAML files and dotted CLI overrides.

Precedence (later wins): dataclass defaults < the task's defaults < the model preset (or, with --init, the
checkpoint's architecture) < `--config x.yaml` < the CLI flags of train.py (`--batch-size`, `--max-steps`, ...)
< dotted overrides (`train.lr=1e-4`). `violet.runtime.build_config` applies them in that order; the resolved config is
printed and saved with every run so a result can always be traced to its settings. `python -m violet.config` shows
the resolved config without training, and `--list-keys` every key (docs/configuration.md).

This package is the lowest layer: it imports nothing else from violet (only `__main__` does, as an entry point).
"""
from violet.config.errors import ConfigError, UnknownKeyError
from violet.config.overrides import (
    apply_overrides,
    config_from_dict,
    eval_annotation,
    load_yaml,
    parse_dotted,
    save_config,
)
from violet.config.sections import DataConfig, EvalConfig, ModelConfig, ObjectiveConfig, RunConfig, TrainConfig

__all__ = [
    "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "ObjectiveConfig", "RunConfig", "TrainConfig",
    "UnknownKeyError", "apply_overrides", "config_from_dict", "eval_annotation", "load_yaml", "parse_dotted",
    "save_config",
]
