"""Turning YAML files, CLI flags and dotted overrides into typed config fields, with errors that name the key."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from violet.config.errors import ConfigError, unknown_key
from violet.config.sections import RunConfig

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the dataclass field's declared type, failing with the key's name."""
    if isinstance(annotation, str):
        annotation = eval_annotation(annotation)
    if value is None:  # `key:` with nothing after it in YAML; str() would make it the text "None"
        raise ConfigError(f"{key}: no value given (an empty YAML value is null); write one, e.g. '\"\"' for empty text")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE + _FALSE:
            return text in _TRUE
        raise ConfigError(f"{key}: expected a boolean ({'|'.join(_TRUE + _FALSE)}), got {value!r}")
    if annotation is str and isinstance(value, bool):
        raise ConfigError(f"{key}: YAML read {value!r} as a boolean (yes/no/on/off); quote it, e.g. '\"no\"'")
    if annotation in (int, float, str):
        if isinstance(value, (dict, list)):  # str() would silently turn a YAML mapping or list into text
            raise ConfigError(f"{key}: expected {annotation.__name__}, got a {type(value).__name__}: {value!r}")
        try:
            if key.endswith("rerank_k") and str(value).strip().lower() == "all":
                return -1  # re-rank every pair, as VIOLET evaluated
            if annotation is int and isinstance(value, str):
                value = float(value) if any(c in value for c in ".eE") else value  # "1e3" and "2.0" are ints
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return annotation(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{key}: expected {annotation.__name__}, got {value!r}") from None
    return value


_ANNOTATIONS = {"int": int, "float": float, "str": str, "bool": bool}


def eval_annotation(name: str) -> Any:
    """Resolve the string annotations produced by `from __future__ import annotations` (only plain types used)."""
    if name not in _ANNOTATIONS:
        raise TypeError(f"unsupported config field type {name!r}")  # a programming error, not the user's
    return _ANNOTATIONS[name]


def _section_fields(obj: Any) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def apply_overrides(config: Any, overrides: dict[str, Any], prefix: str = "") -> None:
    """Set nested fields from a (possibly nested) dict; unknown keys raise instead of being ignored."""
    fields = _section_fields(config)
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise unknown_key(dotted, fields)
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted} is a section; set its fields, e.g. {dotted}.<field>=... "
                                  f"(fields: {', '.join(_section_fields(current))})")
            apply_overrides(current, value, prefix=f"{dotted}.")
        else:
            setattr(config, key, _coerce(value, fields[key].type, dotted))
    if hasattr(config, "__post_init__"):
        config.__post_init__()  # re-validate after edits


def parse_dotted(items: list[str]) -> dict[str, Any]:
    """Turn ["train.lr=1e-4", "model.width=256"] into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. train.lr=1e-4")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # "train=1 train.lr=2": a key given both as a value and a section
                raise ConfigError(f"override {item!r}: {part!r} was already given a value")
        # Kept as text: the field's declared type converts it (YAML would turn `no` into False).
        node[parts[-1]] = _unquote(raw.strip())
    return nested


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path) as handle:
            loaded = yaml.safe_load(handle) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections (model, data, train, objective, "
                          f"eval), got a {type(loaded).__name__}")
    return loaded


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Rebuild a RunConfig saved by `to_dict` (used when loading checkpoints)."""
    config = RunConfig()
    apply_overrides(config, data)
    return config


def save_config(config: RunConfig, path: str | Path) -> None:
    Path(path).write_text(config.to_json() + "\n")
