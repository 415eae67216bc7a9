"""Typed config reading for any config dataclass: ``key=value`` overrides, YAML files, validation.

Every algorithm keeps its hyperparameters in a dataclass (:class:`~qiter.dqn.config.DQNConfig`,
:class:`~qiter.fqi_config.FQIConfig`...). This module turns untyped values -- strings from ``--set
key=value``, YAML values, a checkpoint's dict -- into such a dataclass, converting each value with the
type its field declares:

* ``int``: ``1e5``, ``100_000`` and ``2.0`` are fine, ``2.5`` is not;
* ``float``: any number; ``bool``: ``true/false``, ``yes/no``, ``on/off``, ``1/0``;
* ``Literal[...]``: one of the choices, case-insensitive, with a did-you-mean hint;
* ``X | None``: ``none``, ``null``, ``~`` or an empty value give ``None``.

A mistake is one line naming the key and what it expects (an unknown key also gets the closest valid key and
the list of keys), raised as :class:`~qiter.errors.QiterError`. After conversion, a dataclass's own
``validate(self) -> None`` method checks the invariants the types cannot say (use :func:`checker` there).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from qiter.errors import QiterError
from qiter.runs import read_yaml_mapping

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "ENV_KWARGS_RULE",
    "MAX_SEED",
    "SEED_RANGE",
    "checker",
    "config_from_dict",
    "config_to_dict",
    "convert_value",
    "convert_values",
    "env_kwargs_ok",
    "field_types",
    "guess_value",
    "parse_int",
    "parse_keyword_arguments",
    "parse_overrides",
    "read_config_file",
    "seed_ok",
    "suggest",
    "type_name",
    "validate",
]

C = TypeVar("C", bound="DataclassInstance")

_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}
_NONE = {"none", "null", "~", ""}


def suggest(word: str, choices: Iterable[str]) -> str:
    """A did-you-mean hint: ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` when none is close.

    :param word: What the user wrote.
    :param choices: The valid words.
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------------------
# Fields and their types
# ---------------------------------------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    # get_type_hints resolves the string annotations of ``from __future__ import annotations`` in each
    # class's own module, so fields inherited from a base class defined elsewhere get their types too.
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def field_types(cls: type[DataclassInstance]) -> dict[str, Any]:
    """The settable fields of a config dataclass and their types, in declaration order (base class first).

    :param cls: A dataclass type.
    :raises TypeError: ``cls`` is not a dataclass type (a programming error, not bad input).
    """
    return dict(_field_types(cls))


def type_name(tp: Any) -> str:
    """How an error message names a field type: ``an integer``, ``one of 'mse', 'huber'``...

    :param tp: A type from :func:`field_types`.
    """
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return " or ".join(type_name(a) for a in inner) + " or none"
    if origin is dict or tp is dict:
        return "a mapping such as {key: value}"
    return {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


# ---------------------------------------------------------------------------------------------------------
# Typed conversion
# ---------------------------------------------------------------------------------------------------------


def _convert(key: str, tp: Any, value: Any) -> Any:
    """Convert ``value`` (a string from the command line, or a YAML value) to the field type ``tp``."""

    def bad() -> QiterError:
        return QiterError(f"bad value for {key}: {value!r} (expected {type_name(tp)})")

    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
            if type(None) in args:
                return None
            raise bad()
        for inner in (a for a in args if a is not type(None)):
            try:
                return _convert(key, inner, value)
            except QiterError:
                continue
        raise bad()
    if value is None:
        raise bad()
    if origin is dict or tp is dict:
        return _convert_mapping(value, bad)
    if origin is Literal:
        return _convert_literal(key, tp, value)
    if tp is bool:
        return _convert_bool(value, bad)
    if tp is int:
        return _convert_int(value, bad)
    if tp is float:
        # bool is an int subclass; ``gamma: true`` is a mistake, not 1.0
        if isinstance(value, int | float) and not isinstance(value, bool):
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
        # YAML reads ``env_id: 2048`` as a number; the user meant the text
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if isinstance(tp, type) and isinstance(value, tp):
        return value  # a field of another type, given a value of that type (from Python, not the CLI)
    raise bad()


def _convert_mapping(value: Any, bad: Callable[[], QiterError]) -> dict[str, Any]:
    """A mapping field (``env_kwargs``): a mapping from YAML or a checkpoint, or ``{key: value, ...}`` text."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise bad() from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise bad()
    return dict(value)


def _convert_literal(key: str, tp: Any, value: Any) -> Any:
    choices = get_args(tp)
    if value in choices:
        return value
    if isinstance(value, str):
        lowered = {str(c).lower(): c for c in choices}
        if value.strip().lower() in lowered:
            return lowered[value.strip().lower()]
    hint = suggest(str(value), [str(c) for c in choices])
    raise QiterError(f"bad value for {key}: {value!r}{hint} (expected {type_name(tp)})")


def _convert_bool(value: Any, bad: Callable[[], QiterError]) -> bool:
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


def _convert_int(value: Any, bad: Callable[[], QiterError]) -> int:
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
            number = float(s)  # 1e5 (YAML 1.1 reads it as a string), 2.0
        except ValueError:
            raise bad() from None
    else:
        raise bad()
    if math.isfinite(number) and number.is_integer():
        return int(number)
    raise bad()


def parse_int(text: str) -> int:
    """An integer from the command line: ``100000``, ``100_000``, or integral scientific notation (``1e5``).

    :raises QiterError: Anything else (``1.5``, ``1e-3``, ``ten``).
    """
    return int(_convert_int(text, lambda: QiterError(f"{text!r} is not an integer")))


def guess_value(text: str) -> Any:
    """A value of unknown type from the command line, typed as ``--set`` types them: ``true``/``false``,
    ``none``, integers (``100_000``; ``1e5`` is a number), numbers, ``[...]``/``{...}`` as YAML, else text.

    :param text: What the user wrote after ``key=``.
    """
    s = text.strip()
    lowered = s.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null", "~"):
        return None
    try:
        return int(s.replace("_", ""))
    except ValueError:
        pass
    try:
        return float(s.replace("_", ""))
    except ValueError:
        pass
    if s[:1] in ("[", "{"):
        try:
            return yaml.safe_load(s)
        except yaml.YAMLError:
            raise QiterError(f"{text!r} is not valid YAML") from None
    return s


def parse_keyword_arguments(items: Iterable[str], flag: str = "--env-kwargs") -> dict[str, Any]:
    """Keyword arguments from ``key=value`` strings (``--env-kwargs``), each value typed by :func:`guess_value`.

    :param items: Strings such as ``"enable_wind=true"``.
    :param flag: How the message names the option.
    :raises QiterError: A string without ``=``, or a key that is not a Python name.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise QiterError(f"bad {flag} {item!r}: use key=value, e.g. {flag} is_slippery=false")
        result[key] = guess_value(value)
    return result


def _check_key(cls: type[DataclassInstance], key: str) -> Any:
    """The type of field ``key`` of ``cls``, or a one-line error naming the closest key and all keys."""
    fields = _field_types(cls)
    if key not in fields:
        hint = suggest(key, fields)
        raise QiterError(f"unknown config key {key!r}{hint}. Valid keys: {', '.join(fields)}")
    return fields[key]


def convert_value(cls: type[DataclassInstance], key: str, value: Any) -> Any:
    """One value converted to the type of field ``key`` of ``cls``.

    :param cls: A config dataclass type.
    :param key: A field name.
    :param value: A string, a YAML value or an already typed value.
    :raises QiterError: An unknown key or a value of the wrong type.
    """
    return _convert(key, _check_key(cls, key), value)


def convert_values(
    cls: type[DataclassInstance], values: Mapping[str, Any], source: str = "a config"
) -> dict[str, Any]:
    """A partial mapping converted field by field (no defaults filled in, no validation).

    :param cls: A config dataclass type.
    :param values: Field names to values.
    :param source: What ``values`` is, for the error when it is not a mapping (``"config file x.yaml"``).
    :raises QiterError: Not a mapping, an unknown key or a value of the wrong type.
    """
    if not isinstance(values, Mapping):
        kind = type(values).__name__
        raise QiterError(f"{source} should be a mapping of config keys to values, not {kind}")
    return {str(key): convert_value(cls, str(key), value) for key, value in values.items()}


def _example(cls: type[DataclassInstance]) -> str:
    """``key=value`` for the first field with a default, to show the syntax with a real key."""
    for f in dataclasses.fields(cls):
        if f.init and f.default is not dataclasses.MISSING:
            return f"{f.name}={f.default}"
    return "key=value"


def parse_overrides(cls: type[DataclassInstance], overrides: Iterable[str]) -> dict[str, Any]:
    """Typed values from ``key=value`` strings (``--set``); dashes in keys count as underscores.

    :param cls: A config dataclass type.
    :param overrides: Strings such as ``"learning-rate=1e-3"`` (one string is taken as a list of one).
    :raises QiterError: A string without ``=``, an unknown key or a value of the wrong type.
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    example = _example(cls)
    result: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise QiterError(f"bad override {item!r}: use key=value, e.g. {example}")
        result[key] = convert_value(cls, key, value)
    return result


# ---------------------------------------------------------------------------------------------------------
# Configs from and to dicts, validation
# ---------------------------------------------------------------------------------------------------------


#: The largest seed: numpy's legacy seeding (``np.random.seed``) takes seeds in [0, 2**32 - 1].
MAX_SEED = 2**32 - 1
SEED_RANGE = f"an integer in [0, {MAX_SEED}]"


def seed_ok(seed: int | None) -> bool:
    """Whether ``seed`` is ``None`` or in numpy's and torch's range ``[0, 2**32 - 1]`` (for ``validate``)."""
    return seed is None or 0 <= seed <= MAX_SEED


# Keyword arguments of gymnasium.make that qiter sets itself.
_RESERVED_ENV_KWARGS = ("render_mode",)
ENV_KWARGS_RULE = "a mapping of Python names to values, without render_mode (qiter sets it)"


def env_kwargs_ok(env_kwargs: Mapping[str, Any]) -> bool:
    """Whether ``env_kwargs`` can go to ``gymnasium.make`` (for ``validate``): Python names as keys, none of
    the arguments qiter passes itself."""
    return all(isinstance(k, str) and k.isidentifier() and k not in _RESERVED_ENV_KWARGS for k in env_kwargs)


def checker(config: object) -> Callable[[bool, str, str], None]:
    """A ``need(ok, key, what)`` function for a ``validate`` method, so its checks read as a list of rules.

    ``need(self.gamma <= 1, "gamma", "in (0, 1]")`` raises ``gamma must be in (0, 1], got 1.5`` when the
    condition is false.

    :param config: The config under validation (the message shows its value of ``key``).
    """

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise QiterError(f"{key} must be {what}, got {getattr(config, key)!r}")

    return need


def validate(config: object) -> None:
    """Run the config's own ``validate()`` method, when its class has one.

    :raises QiterError: From that method.
    """
    method = getattr(config, "validate", None)
    if callable(method):
        method()


def _required_fields(cls: type[DataclassInstance]) -> list[str]:
    """The settable fields of ``cls`` without a default."""
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]


def config_from_dict(cls: type[C], values: Mapping[str, Any], source: str = "a config") -> C:
    """A validated config from a (possibly partial) mapping; missing keys take their defaults.

    :param cls: A config dataclass type.
    :param values: Field names to values of any form :func:`convert_value` takes.
    :param source: What ``values`` is, for the error when it is not a mapping.
    :raises QiterError: An unknown key, a missing key (a field without a default), a value of the wrong
        type, or an invalid config (its ``validate``).
    """
    converted = convert_values(cls, values, source)
    # cls(...) would raise a TypeError, which the CLI does not turn into a one-line message
    missing = [name for name in _required_fields(cls) if name not in converted]
    if missing:
        raise QiterError(f"{source} lacks the config key{'s' * (len(missing) > 1)} {', '.join(missing)}")
    config = cls(**converted)
    validate(config)
    return config


def config_to_dict(config: DataclassInstance) -> dict[str, Any]:
    """All fields of a config as plain values (for YAML files and checkpoints), in declaration order."""
    return dataclasses.asdict(config)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML config file (convert it with :func:`convert_values`).

    :param path: The file.
    :raises QiterError: The file does not exist, is not valid YAML, or holds something else than a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise QiterError(f"config file {p} does not exist")
    try:
        return read_yaml_mapping(p)
    except QiterError as e:
        # PyYAML's messages span lines (the position, then a caret); the CLI prints one line.
        raise QiterError(" ".join(str(e).split())) from None
