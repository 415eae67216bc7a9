"""DQN presets and config resolution: defaults < preset < YAML file < ``key=value`` overrides < ``--seed``.

Presets are YAML files shipped in ``qiter/presets`` (``qiter presets`` lists them). Each maps
:class:`~qiter.dqn.config.DQNConfig` field names to values, with a comment header saying where the values
come from. ``qiter train CartPole-v1`` uses the preset named ``CartPole-v1`` when one exists.

Every value, whether it comes from a preset, a YAML file, a checkpoint or the command line, goes through the
same typed conversion (:func:`config_from_dict`), so ``1e5`` is a fine integer and ``none`` a fine
``None``, and a mistake is reported with the key's name and its expected type.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from qiter.dqn.config import DQNConfig
from qiter.errors import QiterError
from qiter.runs import read_yaml_mapping

__all__ = [
    "config_from_dict",
    "config_to_dict",
    "list_presets",
    "load_preset",
    "parse_overrides",
    "resolve_config",
    "validate_config",
]

_FIELD_TYPES: dict[str, Any] = get_type_hints(DQNConfig)
_FIELD_NAMES: list[str] = [f.name for f in dataclasses.fields(DQNConfig)]
_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}
_NONE = {"none", "null", "~", ""}


# ---------------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------------


def _preset_files() -> dict[str, Any]:
    folder = resources.files("qiter") / "presets"
    if not folder.is_dir():  # pragma: no cover - broken install
        return {}
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def list_presets() -> list[str]:
    """Names of the shipped presets, sorted."""
    return sorted(_preset_files())


def load_preset(name: str) -> dict[str, Any]:
    """The raw values of a shipped preset (config keys -> values, as written in its YAML file).

    :raises QiterError: No preset has this name (the message lists the valid names).
    """
    files = _preset_files()
    if name not in files:
        by_lower = {n.lower(): n for n in files}
        if name.lower() in by_lower:
            name = by_lower[name.lower()]
        else:
            hint = _suggest(name, files)
            raise QiterError(f"unknown preset {name!r}{hint}. Presets: {', '.join(sorted(files))}")
    data = yaml.safe_load(files[name].read_text(encoding="utf-8"))
    if data is None:
        return {}
    if not isinstance(data, dict):  # pragma: no cover - shipped files are tested
        raise QiterError(f"preset {name!r} should be a mapping of config keys to values")
    return data


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------------------
# Typed conversion
# ---------------------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in inner) + " or none"
    return {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _convert(key: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a YAML value) to the field type ``tp``."""

    def bad() -> QiterError:
        return QiterError(f"bad value for {key}: {value!r} (expected {_type_name(tp)})")

    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
            raise bad()
        inner = [a for a in args if a is not type(None)]
        for a in inner:
            try:
                return _convert(key, a, value)
            except QiterError:
                continue
        raise bad()
    if value is None:
        raise bad()
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        if isinstance(value, str):
            lowered = {str(c).lower(): c for c in choices}
            if value.strip().lower() in lowered:
                return lowered[value.strip().lower()]
        hint = _suggest(str(value), [str(c) for c in choices])
        raise QiterError(f"bad value for {key}: {value!r}{hint} (expected {_type_name(tp)})")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            s = value.strip().lower()
            if s in _TRUE:
                return True
            if s in _FALSE:
                return False
        raise bad()
    if tp is int:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int):
            return value
        number: float
        if isinstance(value, float):
            number = value
        elif isinstance(value, str):
            s = value.strip().replace("_", "")
            try:
                return int(s)
            except ValueError:
                pass
            try:
                number = float(s)  # 1e5, 2.0
            except ValueError:
                raise bad() from None
        else:
            raise bad()
        if math.isfinite(number) and number.is_integer():
            return int(number)
        raise bad()
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip().replace("_", ""))
            except ValueError:
                raise bad() from None
        raise bad()
    if tp is str:
        if isinstance(value, str):
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad()
    raise bad()  # pragma: no cover - a DQNConfig field of a type this function does not know


def _check_key(key: str) -> None:
    if key not in _FIELD_TYPES:
        hint = _suggest(key, _FIELD_NAMES)
        raise QiterError(f"unknown config key {key!r}{hint}. Valid keys: {', '.join(_FIELD_NAMES)}")


def _convert_mapping(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(values, Mapping):
        kind = type(values).__name__
        raise QiterError(f"{source} should be a mapping of config keys to values, not {kind}")
    converted: dict[str, Any] = {}
    for key, value in values.items():
        key = str(key)
        _check_key(key)
        converted[key] = _convert(key, _FIELD_TYPES[key], value)
    return converted


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings into typed values.

    :raises QiterError: A string without ``=``, an unknown key or a value of the wrong type.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    result: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise QiterError(f"bad override {item!r}: use key=value, e.g. learning_rate=1e-3")
        _check_key(key)
        result[key] = _convert(key, _FIELD_TYPES[key], value)
    return result


# ---------------------------------------------------------------------------------------------------------
# Config <-> dict, validation, resolution
# ---------------------------------------------------------------------------------------------------------


def config_to_dict(config: DQNConfig) -> dict[str, Any]:
    """All fields of a config as plain values (for config.yaml and checkpoints), in declaration order."""
    return dataclasses.asdict(config)


def config_from_dict(values: Mapping[str, Any]) -> DQNConfig:
    """Build a validated config from a (possibly partial) dict; missing keys take their defaults.

    :raises QiterError: An unknown key (the valid keys are listed), a value of the wrong type or an invalid
        combination of values.
    """
    config = DQNConfig(**_convert_mapping(values, "a config"))
    validate_config(config)
    return config


def validate_config(config: DQNConfig) -> None:
    """Check the simple invariants of a config (positive sizes, probabilities in [0, 1]...).

    :raises QiterError: With the key, its value and what is expected.
    """

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise QiterError(f"{key} must be {what}, got {getattr(config, key)!r}")

    c = config
    need(bool(c.env_id), "env_id", "a gymnasium environment id")
    for key in ("n_timesteps", "replay_buffer_size", "batch_size", "update_interval", "gradient_steps"):
        need(getattr(c, key) >= 1, key, "at least 1")
    need(c.n_hidden_units >= 1, "n_hidden_units", "at least 1")
    need(c.n_hidden_layers >= 0, "n_hidden_layers", "at least 0")
    need(c.learning_starts >= 0, "learning_starts", "at least 0")
    need(c.target_network_update_interval >= 1, "target_network_update_interval", "at least 1")
    need(c.n_steps >= 1, "n_steps", "at least 1")
    need(c.learning_rate > 0 and math.isfinite(c.learning_rate), "learning_rate", "positive")
    if c.learning_rate_final is not None:
        need(0 <= c.learning_rate_final < math.inf, "learning_rate_final", "at least 0 (or none)")
    if c.max_grad_norm is not None:
        need(c.max_grad_norm > 0, "max_grad_norm", "positive (or none)")
    need(c.adam_eps > 0, "adam_eps", "positive")
    need(0 < c.gamma <= 1, "gamma", "in (0, 1]")
    need(0 < c.tau <= 1, "tau", "in (0, 1] (1 is a hard copy)")
    for key in ("exploration_initial_eps", "exploration_final_eps", "exploration_fraction"):
        need(0 <= getattr(c, key) <= 1, key, "in [0, 1]")
    for key in ("eval_exploration_rate",):
        need(0 <= getattr(c, key) <= 1, key, "in [0, 1]")
    need(c.exploration_decay_episodes > 0, "exploration_decay_episodes", "positive")
    need(c.per_alpha >= 0, "per_alpha", "at least 0")
    need(0 <= c.per_beta_initial <= 1, "per_beta_initial", "in [0, 1]")
    need(0 <= c.per_beta_final <= 1, "per_beta_final", "in [0, 1]")
    need(c.per_eps > 0, "per_eps", "positive")
    need(c.n_eval_episodes >= 1, "n_eval_episodes", "at least 1")
    need(c.evaluation_interval >= 0, "evaluation_interval", "at least 0 (0: no periodic evaluation)")
    if c.checkpoint_interval is not None:
        need(c.checkpoint_interval >= 1, "checkpoint_interval", "at least 1 (or none: evaluation_interval)")
    if c.stop_at_return is not None:
        need(not math.isnan(c.stop_at_return), "stop_at_return", "a number (or none)")
    try:
        import torch

        torch.device(c.device)
    except (RuntimeError, ValueError):
        raise QiterError(f"device must be a torch device such as 'cpu' or 'cuda', got {c.device!r}") from None


def _read_yaml_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise QiterError(f"config file {p} does not exist")
    return read_yaml_mapping(p)


def resolve_config(
    env_id: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    seed: int | None = None,
) -> DQNConfig:
    """The config of a run, from its layers (each overriding the ones before):

    1. :class:`DQNConfig` defaults;
    2. the preset ``preset``, or if none is given the preset named like ``env_id`` when one exists;
    3. the YAML file ``config_file``;
    4. ``env_id`` itself (so ``qiter train Acrobot-v1 --preset CartPole-v1`` trains on Acrobot);
    5. ``key=value`` ``overrides``;
    6. ``seed``.

    :raises QiterError: An unknown preset, file or key, a value of the wrong type, an invalid config.
    """
    values: dict[str, Any] = {}
    if preset is None and env_id is not None and env_id in list_presets():
        preset = env_id
    if preset is not None:
        values.update(_convert_mapping(load_preset(preset), f"preset {preset!r}"))
    if config_file is not None:
        values.update(_convert_mapping(_read_yaml_file(config_file), f"config file {config_file}"))
    if env_id is not None:
        values["env_id"] = env_id
    values.update(parse_overrides(overrides))
    if seed is not None:
        values["seed"] = _convert("seed", int, seed)
    return config_from_dict(values)
