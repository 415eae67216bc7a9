"""Offline data as local Minari datasets (the Farama format that d3rlpy and other offline-RL libraries read).

:func:`save_minari` splits an :class:`~qiter.data.OfflineData` into episodes and writes a Minari dataset;
:func:`load_minari` reads one back as ``OfflineData``. A round trip keeps the data exactly: the arrays, their
float64 dtypes and shapes, and ``terminateds`` and ``truncateds`` apart. Datasets live under
``MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``); nothing is ever downloaded.
"""

from __future__ import annotations

import re
import shutil
import warnings
from typing import Any

import gymnasium as gym
import numpy as np

from qiter.data import OfflineData
from qiter.errors import QiterError

__all__ = ["dataset_path", "load_minari", "minari_name", "save_minari"]

# Minari's id syntax: optional namespace folders, a name, a version suffix ("-v0" is added when missing).
_ID = re.compile(r"^(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*-v\d+$")


def minari_name(name: str) -> str:
    """The Minari dataset id for ``name``: ``-v0`` is appended when it has no version suffix.

    :param name: A dataset name such as ``cartpole-random`` or ``qiter/cartpole-random-v1``.
    :raises QiterError: The name is not a valid Minari id.
    """
    dataset_id = name if re.search(r"-v\d+$", name) else f"{name}-v0"
    if not _ID.match(dataset_id):
        raise QiterError(
            f"invalid Minari dataset name {name!r}: use letters, digits, '_', '.', '-' (and '/' for namespaces)"
        )
    return dataset_id


def dataset_path(name: str) -> Any:
    """The local folder of dataset ``name`` (under ``MINARI_DATASETS_PATH``)."""
    from minari.storage.datasets_root_dir import get_dataset_path

    return get_dataset_path(minari_name(name))


def _episode_ends(data: OfflineData) -> np.ndarray:
    """Indices of the last transition of each episode: a termination, a truncation, a break in the chain
    ``next_observations[i] == observations[i + 1]`` (data glued together), or the end of the data."""
    done = data.terminateds.astype(bool)
    if data.truncateds is not None:
        done = done | data.truncateds.astype(bool)
    flat_next = data.next_observations[:-1].reshape(len(data) - 1, -1)
    flat_obs = data.observations[1:].reshape(len(data) - 1, -1)
    broken = np.any(flat_next != flat_obs, axis=1)
    ends = done.copy()
    ends[:-1] |= broken
    ends[-1] = True
    return np.flatnonzero(ends)


def _spaces(data: OfflineData) -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    """Spaces that hold the data as it is (float64 observations), so Minari stores it without a cast."""
    obs_space = gym.spaces.Box(-np.inf, np.inf, data.observations.shape[1:], np.float64)
    n_actions = int(data.actions.max()) + 1 if len(data) else 1
    if data.env_id is not None:
        from qiter.envs import make_env

        env = make_env(data.env_id)
        try:
            if isinstance(env.action_space, gym.spaces.Discrete):
                n_actions = max(n_actions, int(env.action_space.n))
        finally:
            env.close()
    return obs_space, gym.spaces.Discrete(n_actions)


def save_minari(data: OfflineData, name: str, *, overwrite: bool = False, description: str = "") -> str:
    """Write ``data`` to a local Minari dataset.

    :param data: The transitions (validated first).
    :param name: The dataset name (``-v0`` is added when it has no version).
    :param overwrite: Replace a dataset of that name (otherwise refused).
    :param description: The dataset's description.
    :return: The dataset id.
    :raises QiterError: Invalid data or name, or a dataset of that name exists.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    data.validate()
    if len(data) == 0:
        raise QiterError("cannot write an empty dataset")
    dataset_id = minari_name(name)
    path = dataset_path(dataset_id)
    if path.exists():
        if not overwrite:
            raise QiterError(f"Minari dataset {dataset_id!r} already exists in {path}: pick another name")
        shutil.rmtree(path)
    truncateds = data.truncateds if data.truncateds is not None else np.zeros(len(data))
    buffers = []
    start = 0
    for episode, end in enumerate(_episode_ends(data)):
        steps = slice(start, end + 1)
        observations = np.concatenate([data.observations[steps], data.next_observations[end : end + 1]])
        buffers.append(
            EpisodeBuffer(
                id=episode,
                observations=list(observations),
                actions=list(data.actions[steps, 0].astype(np.int64)),
                rewards=list(data.rewards[steps]),
                terminations=list(data.terminateds[steps].astype(bool)),
                truncations=list(truncateds[steps].astype(bool)),
            )
        )
        start = end + 1
    observation_space, action_space = _spaces(data)
    try:
        with warnings.catch_warnings():
            # Minari warns about metadata it cannot guess (author, eval_env...), which a local dataset lacks.
            warnings.simplefilter("ignore", UserWarning)
            minari.create_dataset_from_buffers(
                dataset_id,
                buffers,
                env=data.env_id,
                observation_space=observation_space,
                action_space=action_space,
                algorithm_name="qiter",
                description=description or "Transitions written by qiter",
            )
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)  # nothing half-written
        raise
    return dataset_id


def load_minari(name: str) -> OfflineData:
    """Read a local Minari dataset as :class:`~qiter.data.OfflineData` (float64 arrays, actions ``(n, 1)``).

    :param name: The dataset name or id.
    :raises QiterError: No such local dataset, or one whose actions are not discrete.
    """
    import minari

    dataset_id = minari_name(name)
    try:
        dataset = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError as exc:
        raise QiterError(
            f"no local Minari dataset {dataset_id!r} in {dataset_path(dataset_id).parent} "
            "(set MINARI_DATASETS_PATH, or write one with `qiter collect ENV_ID --format minari --name NAME`)"
        ) from exc
    if not isinstance(dataset.action_space, gym.spaces.Discrete):
        raise QiterError(
            f"Minari dataset {dataset_id!r} has {dataset.action_space} actions; FQI needs Discrete"
        )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "next", "act", "rew", "term", "trunc")}
    for episode in dataset.iterate_episodes():
        observations = np.asarray(episode.observations, dtype=np.float64)
        parts["obs"].append(observations[:-1])
        parts["next"].append(observations[1:])
        parts["act"].append(np.asarray(episode.actions, dtype=np.float64).reshape(-1, 1))
        parts["rew"].append(np.asarray(episode.rewards, dtype=np.float64))
        parts["term"].append(np.asarray(episode.terminations, dtype=np.float64))
        parts["trunc"].append(np.asarray(episode.truncations, dtype=np.float64))
    if not parts["obs"]:
        raise QiterError(f"Minari dataset {dataset_id!r} holds no episode")
    spec = dataset.env_spec
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    data = OfflineData(
        arrays["obs"], arrays["next"], arrays["act"], arrays["rew"], arrays["term"], arrays["trunc"],
        env_id=spec.id if spec is not None else None,
    )  # fmt: skip
    data.validate(source=f"Minari dataset {dataset_id!r}")
    return data
