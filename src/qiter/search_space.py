"""Optuna search spaces as data: each algorithm declares one next to its config, ``qiter tune`` draws from it.

A search space maps config keys to how a trial draws their value::

    ("log", low, high)      a float, log-uniform
    ("float", low, high)    a float, uniform
    ("int", low, high)      an integer, uniform
    ("choice", [v1, v2])    one of the values
    ("fixed", value)        not drawn: set in every trial (a value the drawn ones need, such as
                            ``gradient_steps: -1`` for as many gradient steps as ``update_interval``)

Declared as data, a space can be listed, checked against its config class in a test, and drawn by
:func:`draw`, without Optuna imported until a trial runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["SearchSpace", "draw"]

#: Config key -> ``(kind, *arguments)``, see the module's docstring.
SearchSpace = Mapping[str, tuple[Any, ...]]


def draw(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Config values for one trial: one draw per key of ``space`` (fixed keys take their value).

    :param trial: The Optuna trial that draws them (its parameters are named like the config keys).
    :param space: The search space.
    :return: Config key -> value.
    """
    values: dict[str, Any] = {}
    for key, (kind, *args) in space.items():
        if kind == "log":
            values[key] = trial.suggest_float(key, args[0], args[1], log=True)
        elif kind == "float":
            values[key] = trial.suggest_float(key, args[0], args[1])
        elif kind == "int":
            values[key] = trial.suggest_int(key, args[0], args[1])
        elif kind == "choice":
            values[key] = trial.suggest_categorical(key, args[0])
        elif kind == "fixed":
            values[key] = args[0]
        else:  # pragma: no cover - the shipped spaces are tested
            raise ValueError(f"search space key {key!r}: unknown kind {kind!r}")
    return values
