"""Making and checking gymnasium environments.

Every algorithm goes through :func:`make_env` and the ``require_*`` checks, so an unknown id or an
unsupported space is reported once, clearly, in words a user can act on.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import Any

import gymnasium as gym
from gymnasium import spaces
from gymnasium.error import DependencyNotInstalled

from qiter import pixel_envs
from qiter.errors import QiterError

# Environments that live in third-party packages: importing the package registers them with gymnasium.
_PLUGIN_PACKAGES = {
    "FlappyBird": ("flappy_bird_gymnasium", "pip install 'qiter[flappy]'"),
    "highway": ("highway_env", "pip install highway-env"),
}


# Environments that gymnasium ships but whose dependencies are a qiter extra:
# entry-point package -> (what is missing, the extra that installs it).
_GYMNASIUM_EXTRAS = {"gymnasium.envs.box2d": ("Box2D", "box2d")}


def _register_plugin(env_id: str) -> None:
    kind = pixel_envs.pixel_kind(env_id)
    if kind is not None:
        pixel_envs.register_pixel_envs(env_id, kind)
    for prefix, (module, hint) in _PLUGIN_PACKAGES.items():
        if env_id.startswith(prefix):
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise QiterError(f"{env_id} needs the package '{module}': {hint}") from exc


def import_env_module(env_id: str) -> str:
    """Import the module of a ``module:EnvId`` id (gymnasium's form for a user's own environment), which
    registers its environments; return the id without the module.

    The module is looked up among the installed packages, then in the current folder.

    :param env_id: ``"my_package.envs:MyEnv-v0"``, or a plain id (returned as it is).
    :raises QiterError: The module cannot be imported.
    """
    module, sep, name = env_id.rpartition(":")
    if not sep:
        return env_id
    if not module or not name:
        raise QiterError(f"environment id {env_id!r}: use MODULE:ID, e.g. my_package.envs:MyEnv-v0")
    for attempt in range(2):
        try:
            importlib.import_module(module)
            break
        except ModuleNotFoundError as exc:
            ours = exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))
            if not ours:  # the user's module imports something that is missing
                raise QiterError(f"importing {module!r} for {env_id} failed: {exc}") from None
            if attempt == 1 or os.getcwd() in sys.path:
                raise QiterError(
                    f"no module named {exc.name!r} for {env_id}: install the package that defines {name}, or "
                    "run qiter from the folder that holds it"
                ) from None
            # Not installed: the current folder, as `python -m` would look (last, so nothing is shadowed).
            sys.path.append(os.getcwd())
        except Exception as exc:  # the user's module failed while importing: say where, in one line
            raise QiterError(
                f"importing {module!r} for {env_id} failed: {type(exc).__name__}: {exc}"
            ) from None
    return name


def check_env_id(env_id: str) -> None:
    """Raise a :class:`QiterError` with close suggestions if ``env_id`` is not a registered environment.

    :param env_id: A gymnasium id such as ``"CartPole-v1"``, or ``"module:EnvId"`` for an environment that
        ``module`` registers when imported.
    """
    name = import_env_module(env_id)
    _register_plugin(name)
    if name in gym.registry:
        return
    known = list(gym.registry.keys())
    if name != env_id:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        module = env_id.rpartition(":")[0]
        raise QiterError(f"{module!r} registers no environment {name!r}.{hint}")
    base = name.rsplit("-v", 1)[0]
    newer = sorted(k for k in known if k.rsplit("-v", 1)[0] == base)
    if newer:
        raise QiterError(
            f"environment '{env_id}' is not available in this gymnasium; use one of: {', '.join(newer)}"
        )
    close = difflib.get_close_matches(env_id, known, n=3, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else " Run `qiter envs` to list them."
    raise QiterError(f"unknown environment id '{env_id}'.{hint}")


def make_env(env_id: str, render_mode: str | None = None, flatten: bool = False, **kwargs: Any) -> gym.Env:
    """Create a gymnasium environment, with a clear error for unknown ids.

    :param env_id: A gymnasium id such as ``"CartPole-v1"``, or ``"module:EnvId"`` (the module is imported
        first, see :func:`import_env_module`).
    :param render_mode: ``None``, ``"rgb_array"`` (for videos) or ``"human"``.
    :param flatten: Flatten a non-flat Box (or Dict/Tuple) observation into a 1-D Box, as the seed does for
        highway-env (images, uint8 Boxes of 2 or 3 axes, are left as they are).
    :param kwargs: Passed on to ``gym.make`` (an argument the environment does not take is one line).
    :return: The environment.
    """
    check_env_id(env_id)
    kind = pixel_envs.pixel_kind(env_id)
    if kind is not None:  # Atari and MinAtar come preprocessed, as images
        return pixel_envs.make_pixel_env(env_id, kind, render_mode, **kwargs)
    try:
        env = gym.make(import_env_module(env_id), render_mode=render_mode, **kwargs)
    except DependencyNotInstalled as exc:
        raise QiterError(_missing_dependency_message(env_id, exc)) from exc
    except Exception as exc:
        if not kwargs:
            raise
        # An argument the environment's constructor does not take, or a value it refuses (FrozenLake's
        # map_name=9x9 is a KeyError). gymnasium appends the whole call to a TypeError's message.
        reason = str(exc).split(" was raised from the environment creator")[0]
        if isinstance(exc, TypeError):
            raise QiterError(
                f"{env_id} does not accept the keyword arguments {sorted(kwargs)}: {reason}"
            ) from None
        raise QiterError(
            f"{env_id} refused the keyword arguments {kwargs}: {type(exc).__name__}: {reason}"
        ) from None
    # Images stay images: an MLP agent refuses them in one line rather than learning from flattened pixels.
    space = env.observation_space
    if (
        flatten
        and not (isinstance(space, spaces.Box) and len(space.shape) == 1)
        and not pixel_envs.is_image_space(space)
    ):
        if isinstance(env.observation_space, spaces.Discrete):
            return env
        env = gym.wrappers.FlattenObservation(env)
    return env


def _entry_module(env_id: str) -> str:
    """The module of an environment's entry point, a ``"module:Class"`` string or a callable."""
    entry_point = gym.spec(env_id.rpartition(":")[2]).entry_point
    if isinstance(entry_point, str):
        return entry_point.split(":", 1)[0]
    return getattr(entry_point, "__module__", "") or ""


def _missing_dependency_message(env_id: str, exc: Exception) -> str:
    """One line saying what to install for ``env_id``: the qiter extra when there is one, else gymnasium's
    own advice (its first line)."""
    module = _entry_module(env_id)
    for package, (what, extra) in _GYMNASIUM_EXTRAS.items():
        if module == package or module.startswith(package + "."):
            return f'{env_id} needs {what}, which is not installed: pip install "qiter[{extra}]"'
    lines = str(exc).strip().splitlines()
    return f"{env_id} needs a package that is not installed: {lines[0] if lines else type(exc).__name__}"


# What `qiter train` offers for continuous actions, the advice of a DQN that meets them.
TRAIN_CONTINUOUS_HINT = (
    "For continuous actions use --algo td3, ddpg, naf or cem, or discretize them (--discretize K)."
)
# The advice of the offline algorithms (FQI, its data collection): another command, not a flag of theirs.
OFFLINE_CONTINUOUS_HINT = (
    "For continuous actions train an agent online instead, e.g. `qiter train ENV_ID --algo td3`."
)


def require_discrete_actions(env: gym.Env, algo: str, hint: str = "") -> int:
    """Return the number of actions, or raise if the action space is not ``Discrete``.

    :param env: The environment.
    :param algo: Name of the algorithm, for the message.
    :param hint: What the user can do instead (a sentence, e.g. :data:`TRAIN_CONTINUOUS_HINT`), only
        advice the command that calls this can follow.
    :return: ``env.action_space.n``.
    """
    space = env.action_space
    if not isinstance(space, spaces.Discrete):
        raise QiterError(
            f"{algo} needs a Discrete action space, but {env_name(env)} has {space}."
            + (f" {hint}" if hint else "")
        )
    return int(space.n)


def require_continuous_actions(env: gym.Env, algo: str) -> tuple[int, ...]:
    """Return the action shape, or raise if the action space is not a ``Box``.

    :param env: The environment.
    :param algo: Name of the algorithm, for the message.
    :return: ``env.action_space.shape``.
    """
    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise QiterError(
            f"{algo} needs a continuous (Box) action space, but {env_name(env)} has {space}. "
            "For discrete actions use --algo dqn."
        )
    return tuple(space.shape)


def require_box_observations(env: gym.Env, algo: str) -> tuple[int, ...]:
    """Return the observation shape, or raise if the observation space is not a ``Box``.

    :param env: The environment (flatten Dict/Tuple spaces first with ``make_env(..., flatten=True)``).
    :param algo: Name of the algorithm, for the message.
    :return: The observation shape.
    """
    space = env.observation_space
    if not isinstance(space, spaces.Box):
        extra = (
            " Use the tabular algorithms (`qiter tabular`) for it."
            if isinstance(space, spaces.Discrete)
            else ""
        )
        raise QiterError(f"{algo} needs a Box observation space, but {env_name(env)} has {space}.{extra}")
    return tuple(space.shape)


def require_discrete_observations(env: gym.Env, algo: str) -> int:
    """Return the number of states, or raise if the observation space is not ``Discrete``.

    :param env: The environment.
    :param algo: Name of the algorithm, for the message.
    :return: ``env.observation_space.n``.
    """
    space = env.observation_space
    if not isinstance(space, spaces.Discrete):
        raise QiterError(
            f"{algo} needs a Discrete observation space (a table of states), but {env_name(env)} has {space}. "
            "Use FQI (`qiter fqi`) or DQN (`qiter train`) for continuous observations."
        )
    return int(space.n)


def env_name(env: gym.Env) -> str:
    """The id of an environment, or its class name when it was not made from the registry."""
    return env.spec.id if env.spec is not None else type(env.unwrapped).__name__
