"""Offline transition data: the seed's :class:`OfflineData`, its collection, validation and ``.npz`` I/O.

FQI (and offline evaluation of any agent) works on a fixed batch of transitions ``(s, a, r, s', done)``.
The arrays keep the seed's shapes and float dtypes (``actions`` is ``(n, 1)``, the others ``(n,)``), so the
regression inputs ``concatenate((observations, actions), axis=1)`` work unchanged.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm.auto import tqdm

from qiter.envs import OFFLINE_CONTINUOUS_HINT, make_env, require_box_observations, require_discrete_actions
from qiter.errors import QiterError
from qiter.pixel_envs import refuse_images

# Below this many steps a progress bar is noise: collection takes a second or two.
PROGRESS_MIN_STEPS = 100_000

_REQUIRED_FIELDS = ("observations", "next_observations", "actions", "rewards", "terminateds")

Policy = Callable[[np.ndarray], int]


@dataclass
class OfflineData:
    """
    A class to store transitions.

    The first five fields are the seed's, in the seed's order, so positional construction works.
    """

    observations: np.ndarray  # same as "state" in the theory, (n, *obs_shape)
    next_observations: np.ndarray  # (n, *obs_shape)
    actions: np.ndarray  # discrete action indices, (n, 1)
    rewards: np.ndarray  # (n,)
    terminateds: np.ndarray  # true terminations only (no bootstrap), (n,)
    truncateds: np.ndarray | None = None  # time-limit ends, (n,): the next observation is still bootstrapped
    env_id: str | None = None  # where the data came from, so `qiter fqi FILE` can rebuild the env
    env_kwargs: dict[str, Any] | None = None  # the keyword arguments of gymnasium.make it was made with

    def __len__(self) -> int:
        return len(self.observations)

    def validate(self, env: gym.Env | None = None, source: str = "data") -> None:
        """Check shapes and dtypes, raising a :class:`QiterError` that names the faulty field.

        :param env: If given, also check that the observations match its observation space.
        :param source: What the data is (a file name, say), for the messages.
        """
        n = len(self.observations)
        expected_ndim = {"actions": 2, "rewards": 1, "terminateds": 1, "truncateds": 1}
        for name in (*_REQUIRED_FIELDS, "truncateds"):
            value = getattr(self, name)
            if value is None and name == "truncateds":
                continue
            if not isinstance(value, np.ndarray):
                raise QiterError(
                    f"{source}: field '{name}' must be a numpy array, not {type(value).__name__}"
                )
            if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):
                raise QiterError(f"{source}: field '{name}' must be numeric, but has dtype {value.dtype}")
            if value.ndim == 0 or len(value) != n:
                length = "a scalar" if value.ndim == 0 else f"length {len(value)}"
                raise QiterError(f"{source}: field '{name}' has {length}, but 'observations' has length {n}")
            if name in expected_ndim and value.ndim != expected_ndim[name]:
                want = "(n, 1)" if name == "actions" else "(n,)"
                raise QiterError(f"{source}: field '{name}' must have shape {want}, not {value.shape}")
        if n and not (np.all(self.actions >= 0) and np.all(np.mod(self.actions, 1) == 0)):
            raise QiterError(f"{source}: field 'actions' must hold discrete action indices (0, 1, ...)")
        if self.observations.ndim < 2:
            raise QiterError(
                f"{source}: field 'observations' must be (n, *obs_shape), not {self.observations.shape}"
            )
        if self.next_observations.shape != self.observations.shape:
            raise QiterError(
                f"{source}: field 'next_observations' has shape {self.next_observations.shape}, "
                f"but 'observations' has {self.observations.shape}"
            )
        if env is not None:
            obs_shape = require_box_observations(env, "FQI")
            data_shape = tuple(self.observations.shape[1:])
            if data_shape != obs_shape:
                raise QiterError(
                    f"{source}: field 'observations' has observation shape {data_shape}, "
                    f"but the environment's observation space has shape {obs_shape}"
                )


def collect_data(
    env_id: str,
    n_steps: int = 50_000,
    seed: int | None = None,
    policy: Policy | None = None,
    progress: bool | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
) -> OfflineData:
    """
    Collect transitions using a random agent (sample action randomly), or the given policy.

    :param env_id: The name of the environment.
    :param n_steps: Number of steps to perform in the env.
    :param seed: Seeds the first reset and the random actions, for reproducible data.
    :param policy: A function from one observation to a discrete action (a trained agent, say);
        uniform random actions when ``None``.
    :param progress: Show a progress bar; by default only for ``n_steps >= 100_000``.
    :param env_kwargs: Keyword arguments of ``gymnasium.make`` (kept with the data).
    :return: The collected transitions.
    """
    if n_steps < 1:
        raise QiterError(f"n_steps must be at least 1, not {n_steps}")
    kwargs = dict(env_kwargs or {})
    env = make_env(env_id, **kwargs)
    obs_shape = require_box_observations(env, "FQI data collection")
    refuse_images(env, "FQI")
    require_discrete_actions(env, "FQI data collection", OFFLINE_CONTINUOUS_HINT)
    # Numpy arrays (buffers) to collect the data, float64 as in the seed
    observations = np.zeros((n_steps, *obs_shape))
    next_observations = np.zeros((n_steps, *obs_shape))
    actions = np.zeros((n_steps, 1))
    rewards = np.zeros((n_steps,))
    terminateds = np.zeros((n_steps,))
    truncateds = np.zeros((n_steps,))

    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    show = n_steps >= PROGRESS_MIN_STEPS if progress is None else progress
    for idx in tqdm(range(n_steps), desc=f"collect {env_id}", disable=not show, unit="step"):
        action = env.action_space.sample() if policy is None else policy(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        observations[idx] = obs
        next_observations[idx] = next_obs
        actions[idx] = action
        rewards[idx] = reward
        # Only true termination stops bootstrapping: a timeout is an artificial end of the episode
        terminateds[idx] = terminated
        truncateds[idx] = truncated
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return OfflineData(
        observations, next_observations, actions, rewards, terminateds, truncateds, env_id, kwargs or None
    )


def _npz_path(filename: str | Path) -> Path:
    path = Path(filename)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def save_data(data: OfflineData, filename: str | Path) -> Path:
    """
    Save the collected transitions to a file (npz archive).

    :param data: Collected data (transitions).
    :param filename: Where to save the data (``.npz`` is added if missing).
    :return: The path written.
    """
    data.validate()
    path = _npz_path(filename)
    print(f"Saving to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: getattr(data, name) for name in _REQUIRED_FIELDS}
    if data.truncateds is not None:
        arrays["truncateds"] = data.truncateds
    if data.env_id is not None:
        # A 0-d unicode array: loadable with allow_pickle=False, unlike a Python object
        arrays["env_id"] = np.array(data.env_id)
    if data.env_kwargs:
        # As JSON text in a 0-d unicode array, for the same reason.
        arrays["env_kwargs"] = np.array(json.dumps(data.env_kwargs))
    np.savez(path, **arrays)
    return path


def _check_zip(path: Path) -> None:
    """Raise unless ``path`` is a readable, complete zip archive (as every ``.npz`` is).

    Checked before ``np.load``, which takes any other file for a ``.npy`` or a pickle: a truncated archive
    (its directory is at the end) would be reported as pickled data, with advice to load it unsafely.
    """
    try:
        with path.open("rb") as f:
            empty = not f.read(1)
    except OSError as exc:
        raise QiterError(f"data file '{path}' cannot be read: {exc.strerror or exc}") from exc
    if empty:
        raise QiterError(f"data file '{path}' is empty")
    if not zipfile.is_zipfile(path):
        raise QiterError(
            f"data file '{path}' is not a valid .npz archive: corrupt or truncated (not a complete zip file)"
        )


def load_data(filename: str | Path) -> OfflineData:
    """
    Load OfflineData from a saved numpy file, checking it field by field.

    :param filename: The ``.npz`` file, with or without its suffix.
    :return: Saved offline data that contains a list of transitions.
    """
    path = _npz_path(filename)
    if not path.is_file():
        raise QiterError(f"data file '{path}' does not exist")
    _check_zip(path)
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in (*_REQUIRED_FIELDS, "truncateds", "env_id", "env_kwargs"):
                if name in archive.files:
                    arrays[name] = archive[name]
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        # np.load reads members lazily, so a damaged archive can fail on any field
        lines = str(exc).strip().splitlines()
        raise QiterError(
            f"data file '{path}' is not a valid .npz archive "
            f"({type(exc).__name__}: {lines[0] if lines else 'no details'})"
        ) from exc
    missing = [name for name in _REQUIRED_FIELDS if name not in arrays]
    if missing:
        raise QiterError(f"data file '{path}' lacks the field(s) {', '.join(repr(m) for m in missing)}")
    env_id = arrays.pop("env_id", None)
    if env_id is not None and (env_id.ndim != 0 or env_id.dtype.kind != "U"):
        raise QiterError(
            f"data file '{path}': field 'env_id' must be a string, not {env_id.dtype} {env_id.shape}"
        )
    env_kwargs = _read_env_kwargs(arrays.pop("env_kwargs", None), path)
    data = OfflineData(
        arrays["observations"],
        arrays["next_observations"],
        arrays["actions"],
        arrays["rewards"],
        arrays["terminateds"],
        arrays.get("truncateds"),
        None if env_id is None else str(env_id),
        env_kwargs,
    )
    data.validate(source=f"data file '{path}'")
    return data


def _read_env_kwargs(field: np.ndarray | None, path: Path) -> dict[str, Any] | None:
    """The ``env_kwargs`` field of a data file (JSON text), or ``None`` without one."""
    if field is None:
        return None
    try:
        value = json.loads(str(field)) if field.ndim == 0 and field.dtype.kind == "U" else None
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise QiterError(f"data file '{path}': field 'env_kwargs' must be a JSON mapping")
    return value
