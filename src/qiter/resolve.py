"""Presets and config resolution for every algorithm: defaults < preset < YAML file < ``key=value``
overrides < ``--seed``, and the same layers on top of a run's own config when it is resumed.

Presets are YAML files shipped in ``qiter/presets`` (DQN's) and ``qiter/presets/<algo>`` (the other
algorithms'); ``qiter presets`` lists them. Each maps the algorithm's config field names to values, after a
comment header whose first line is a one-line description and whose next lines say where the values come
from. ``qiter train CartPole-v1`` uses the preset named ``CartPole-v1`` when one exists.

Every value, whether it comes from a preset, a YAML file, a checkpoint or the command line, goes through the
typed conversion of :mod:`qiter.config`, so ``1e5`` is a fine integer and ``none`` a fine ``None``, and a
mistake is reported with the key's name and its expected type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import yaml

from qiter import config as typed
from qiter.errors import QiterError

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11 on

    from qiter.dqn.config import DQNConfig
    from qiter.run_config import RunConfig

__all__ = [
    "describe_preset",
    "list_all_presets",
    "list_presets",
    "load_preset",
    "preset_folder",
    "preset_text",
    "resolve_config",
    "resume_config",
    "with_env_kwargs",
]

R = TypeVar("R", bound="RunConfig")


# ---------------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------------


def _preset_files(folder: Traversable | None) -> dict[str, Traversable]:
    folder = resources.files("qiter") / "presets" if folder is None else folder
    if not folder.is_dir():  # pragma: no cover - broken install
        return {}
    return {p.name[: -len(".yaml")]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def preset_folder(algo: str) -> Traversable:
    """The presets of one algorithm: ``qiter/presets`` for DQN, ``qiter/presets/<algo>`` for the others."""
    root = resources.files("qiter") / "presets"
    return root if algo == "dqn" else root / algo


def list_all_presets() -> list[str]:
    """The DQN presets, then every other algorithm's as ``algo/NAME`` (what ``qiter presets`` lists)."""
    root = resources.files("qiter") / "presets"
    names = list_presets(root)
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")]
    for sub in sorted(folders, key=lambda p: p.name):
        names += [f"{sub.name}/{name}" for name in list_presets(sub)]
    return names


def _preset_file(name: str, folder: Traversable | None) -> Traversable:
    """The file of preset ``name`` (any letter case), or an error naming the closest and all presets."""
    if folder is None and "/" in name:  # another algorithm's preset, as ``qiter presets`` lists it
        algo, _, name = name.partition("/")
        folder = preset_folder(algo)
    elif folder is not None and "/" in name:  # a preset named like a namespaced id: ALE/Pong-v5
        namespace, _, name = name.partition("/")
        folder = folder / namespace
    files = _preset_files(folder)
    if name in files:
        return files[name]
    by_lower = {n.lower(): n for n in files}
    if name.lower() in by_lower:
        return files[by_lower[name.lower()]]
    hint = typed.suggest(name, files)
    raise QiterError(f"unknown preset {name!r}{hint}. Presets: {', '.join(sorted(files))}")


def _has_preset(name: str, folder: Traversable) -> bool:
    """Whether ``folder`` holds preset ``name``; a namespaced id (``ALE/Pong-v5``) lives in a subfolder."""
    namespace, _, base = name.rpartition("/")
    return base in list_presets(folder / namespace if namespace else folder)


def list_presets(folder: Traversable | None = None) -> list[str]:
    """Names of the presets, sorted.

    :param folder: A folder of ``NAME.yaml`` presets; default: the shipped DQN presets.
    """
    return sorted(_preset_files(folder))


def preset_text(name: str, folder: Traversable | None = None) -> str:
    """The YAML text of a preset, comments included (what ``qiter presets NAME`` prints).

    :param name: A preset name (any letter case).
    :param folder: A folder of ``NAME.yaml`` presets; default: the shipped DQN presets.
    :raises QiterError: No preset has this name (the message lists the valid names).
    """
    return _preset_file(name, folder).read_text(encoding="utf-8")


def describe_preset(name: str, folder: Traversable | None = None) -> str:
    """The one-line description of a preset: the first line of its comment header, or ``""`` without one.

    :param name: A preset name (any letter case).
    :param folder: A folder of ``NAME.yaml`` presets; default: the shipped DQN presets.
    :raises QiterError: No preset has this name.
    """
    first = preset_text(name, folder).lstrip().partition("\n")[0]
    if not first.startswith("#"):
        return ""
    return first.lstrip("#").strip().removesuffix(".")


def load_preset(name: str, folder: Traversable | None = None) -> dict[str, Any]:
    """The raw values of a preset (config keys -> values, as written in its YAML file).

    :param name: A preset name (any letter case).
    :param folder: A folder of ``NAME.yaml`` presets; default: the shipped DQN presets.
    :raises QiterError: No preset has this name (the message lists the valid names).
    """
    data = yaml.safe_load(preset_text(name, folder))
    if data is None:
        return {}
    if not isinstance(data, dict):  # pragma: no cover - shipped files are tested
        raise QiterError(f"preset {name!r} should be a mapping of config keys to values")
    return data


# ---------------------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------------------


@overload
def resolve_config(
    env_id: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    *,
    algo: Literal["dqn"] = "dqn",
    presets: Traversable | None = None,
) -> DQNConfig: ...


@overload
def resolve_config(
    env_id: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    *,
    algo: str,
    presets: Traversable | None = None,
) -> RunConfig: ...


@overload
def resolve_config(
    env_id: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    *,
    algo: str = "dqn",
    cls: type[R],
    presets: Traversable | None = None,
) -> R: ...


def resolve_config(
    env_id: str | None = None,
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    *,
    algo: str = "dqn",
    cls: type[RunConfig] | None = None,
    presets: Traversable | None = None,
) -> RunConfig:
    """The config of a new run of algorithm ``algo``, from its layers (each overriding the ones before):

    1. the defaults of the algorithm's config class;
    2. the preset ``preset``, or if none is given the preset named like ``env_id`` when one exists;
    3. the YAML file ``config_file``;
    4. ``env_id`` itself (so ``qiter train Acrobot-v1 --preset CartPole-v1`` trains on Acrobot);
    5. ``key=value`` ``overrides``;
    6. ``seed``.

    :param env_id: The environment id, or ``None`` for the preset's (or the default) one.
    :param preset: A preset name; default: the preset named like ``env_id``, if any.
    :param config_file: A YAML file of config values.
    :param overrides: ``key=value`` strings.
    :param seed: The run's seed.
    :param algo: The algorithm (a key of :data:`qiter.agent.ALGORITHMS`): its config class and presets.
    :param cls: Another config class (a :class:`~qiter.run_config.RunConfig`) than the algorithm's.
    :param presets: Another folder of presets than the algorithm's.
    :raises QiterError: An unknown algorithm, preset, file or key, a value of the wrong type, an invalid
        config.
    """
    if cls is None:
        cls = _config_class(algo)
    if presets is None:
        presets = preset_folder(algo)
    values: dict[str, Any] = {}
    if preset is None and env_id is not None and _has_preset(env_id, presets):
        preset = env_id
    if preset is not None:
        values.update(typed.convert_values(cls, load_preset(preset, presets), f"preset {preset!r}"))
    if config_file is not None:
        raw = typed.read_config_file(config_file)
        values.update(typed.convert_values(cls, raw, f"config file {config_file}"))
    if env_id is not None:
        values["env_id"] = env_id
    values.update(typed.parse_overrides(cls, overrides))
    if seed is not None:
        values["seed"] = typed.convert_value(cls, "seed", seed)
    return typed.config_from_dict(cls, values)


def with_env_kwargs(config: R, env_kwargs: Mapping[str, Any]) -> R:
    """``config`` with ``env_kwargs`` (``--env-kwargs``) over its own ``env_kwargs``, validated again.

    :param config: A resolved config.
    :param env_kwargs: Keyword arguments of ``gymnasium.make``; empty: ``config`` itself.
    :raises QiterError: Keys that cannot go to ``gymnasium.make``.
    """
    if not env_kwargs:
        return config
    config = dataclasses.replace(config, env_kwargs={**config.env_kwargs, **env_kwargs})
    config.validate()
    return config


def resume_config(
    run_dir: str | Path,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
    seed: int | None = None,
    *,
    env_id: str | None = None,
) -> RunConfig:
    """The config a resumed run continues with: the run's own ``config.yaml``, then what the resume changes.

    The algorithm is the one of the run's latest checkpoint. Whether a changed key may change (it may not
    where it fixes the shape of what is saved) is checked when the checkpoint is loaded.

    :param run_dir: The run folder.
    :param config_file: A YAML file of values to change.
    :param overrides: ``key=value`` strings to change.
    :param seed: A new seed.
    :param env_id: A new environment id.
    :raises QiterError: A folder without run or checkpoint, an unknown key, a value of the wrong type.
    """
    from qiter import runs

    run_path = Path(run_dir)
    cls = _config_class(run_algo(run_path))
    values = runs.load_run_config(run_path)
    if env_id is not None:
        values["env_id"] = env_id
    if config_file is not None:
        values.update(
            typed.convert_values(cls, typed.read_config_file(config_file), f"config file {config_file}")
        )
    values.update(typed.parse_overrides(cls, overrides))
    if seed is not None:
        values["seed"] = typed.convert_value(cls, "seed", seed)
    return typed.config_from_dict(cls, values)


def run_algo(run_dir: str | Path) -> str:
    """The algorithm of the run in ``run_dir``, read from its latest checkpoint.

    :raises QiterError: The folder holds no checkpoint, or one of another run.
    """
    from qiter import runs

    run_path = Path(run_dir)
    checkpoint = runs.latest_checkpoint(run_path)
    if checkpoint is None:
        raise QiterError(f"no checkpoint to resume from in {run_path / runs.CHECKPOINT_DIR}")
    state = runs.load_checkpoint(checkpoint)
    runs.check_checkpoint_of_run(run_path, checkpoint, state)  # not a checkpoint copied in from another run
    return str(state.get("algo", "dqn"))


def _config_class(algo: str) -> type[RunConfig]:
    """The config class of an algorithm (imports its agent module)."""
    from qiter.agent import agent_class

    return agent_class(algo).config_class
