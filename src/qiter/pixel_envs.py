"""Games played from pixels: Atari (ale-py, extra ``qiter[atari]``) and MinAtar (extra ``qiter[minatar]``).

:func:`make_env <qiter.envs.make_env>` hands these ids here. Atari gets the field's standard preprocessing
(Mnih et al., 2015; Machado et al., 2018), written once in :func:`make_atari_env`:

- up to 30 no-op actions at reset (``AtariPreprocessing``, ``noop_max=30``);
- each action repeated on 4 frames, the observation being the max of the last two (``frame_skip=4``; the
  id's own frame skip is turned off);
- 84x84 grayscale frames, stacked 4 deep (``FrameStackObservation``, first frame repeated at a reset);
- FIRE pressed at reset in games that need it to start (:class:`FireReset`);
- the loss of a life ends an episode *for learning only* (:class:`EpisodicLife`: ``terminated`` is set
  and the game goes on at the next reset; ``info["game_over"]`` says whether the game really ended, and
  :func:`~qiter.evaluation.run_episodes` plays on to the game's end, so evaluations report whole games).

Rewards are clipped to their sign for learning only by the DQN agent (``clip_rewards``), so the logs and
evaluations show the game's own score. ``ALE/*-v5`` ids keep their sticky actions (probability 0.25, as
Machado et al. recommend); ``*NoFrameskip-v4`` ids have none.

MinAtar (Young & Tian, 2019) games are 10x10 grids of ``c`` boolean channels; :class:`MinAtarFrames`
gives them as ``(c, 10, 10)`` uint8 (channels first, what the convolution takes), and renders colour
frames for videos without seaborn.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from qiter.errors import QiterError

__all__ = [
    "EpisodicLife",
    "FireReset",
    "MinAtarFrames",
    "is_image_space",
    "make_atari_env",
    "make_minatar_env",
    "make_pixel_env",
    "pixel_kind",
    "register_pixel_envs",
]

PixelKind = Literal["atari", "minatar"]

ATARI_STACK = 4
ATARI_INSTALL = 'pip install "qiter[atari]"'
MINATAR_INSTALL = 'pip install "qiter[minatar]"'
# The gymnasium-era Atari ids without the ALE/ prefix: Pong-v4, PongNoFrameskip-v4, PongDeterministic-v0...
_V0_V4 = re.compile(r"[A-Z][A-Za-z0-9]*(NoFrameskip|Deterministic)?-v[04]")


def is_image_space(space: spaces.Space) -> bool:
    """Whether a space holds images: a Box of 2 or 3 axes of uint8 (or bool) pixels."""
    return (
        isinstance(space, spaces.Box)
        and len(space.shape) in (2, 3)
        and np.dtype(space.dtype) in (np.dtype(np.uint8), np.dtype(bool))
    )


def pixel_kind(env_id: str) -> PixelKind | None:
    """``"atari"``, ``"minatar"`` or ``None``, from the id alone (nothing is imported for other ids)."""
    if env_id.startswith("MinAtar/"):
        return "minatar"
    if env_id.startswith("ALE/"):
        return "atari"
    if _V0_V4.fullmatch(env_id) and env_id not in gym.registry:
        # Registered by ale-py alone (gymnasium's own v0/v4 ids, CartPole-v0 say, are registered already).
        return "atari"
    spec = gym.registry.get(env_id)
    if spec is not None and isinstance(spec.entry_point, str) and spec.entry_point.startswith("ale_py"):
        return "atari"
    return None


def register_pixel_envs(env_id: str, kind: PixelKind) -> None:
    """Import the package of ``kind`` and register its ids with gymnasium.

    :raises QiterError: The package is missing (the message names the qiter extra that installs it).
    """
    package, install = ("ale_py", ATARI_INSTALL) if kind == "atari" else ("minatar.gym", MINATAR_INSTALL)
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        name = "ale-py" if kind == "atari" else "minatar"
        raise QiterError(f"{env_id} needs {name}, which is not installed: {install}") from exc
    if kind == "atari":
        gym.register_envs(module)
    elif "MinAtar/Breakout-v1" not in gym.registry:
        module.register_envs()


def make_pixel_env(env_id: str, kind: PixelKind, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """The preprocessed environment of a registered Atari or MinAtar id."""
    if kind == "atari":
        return make_atari_env(env_id, render_mode, **kwargs)
    return make_minatar_env(env_id, render_mode, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# Atari
# ---------------------------------------------------------------------------------------------------------


def _ale(env: gym.Env) -> Any:
    """The ALE interface under an Atari env's wrappers."""
    unwrapped: Any = env.unwrapped
    return unwrapped.ale


def _action_meanings(env: gym.Env) -> list[str]:
    unwrapped: Any = env.unwrapped
    return list(unwrapped.get_action_meanings())


class EpisodicLife(gym.Wrapper):
    """The loss of a life ends the episode for the learner, not the game (Mnih et al., 2015).

    ``step`` returns ``terminated=True`` when a life is lost, with ``info["game_over"] = False``; the next
    ``reset`` then continues the game with one no-op step instead of starting a new one.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = _ale(self.env).lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        info["game_over"] = self.game_over
        return obs, reward, terminated, truncated, info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if self.game_over or seed is not None:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(options=options)
        self.game_over = False
        self.lives = _ale(self.env).lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE after each reset, for the games that wait for it to start (Breakout, ...)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.fire = _action_meanings(env).index("FIRE")

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        self.env.reset(seed=seed, options=options)
        obs, _, terminated, truncated, info = self.env.step(self.fire)
        if terminated or truncated:
            obs, info = self.env.reset(options=options)
        return obs, info


def make_atari_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """An Atari game with the standard preprocessing (see the module docstring): observations of shape
    ``(4, 84, 84)``, uint8.

    :param env_id: A registered ale-py id (``ALE/Pong-v5``, ``PongNoFrameskip-v4``...).
    :param render_mode: ``"rgb_array"`` renders the colour screen (for videos).
    :param kwargs: Passed on to ``gym.make`` (``repeat_action_probability``...).
    """
    kwargs.setdefault("frameskip", 1)  # AtariPreprocessing skips frames and max-pools the last two
    env = gym.make(env_id, render_mode=render_mode, **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True)
    env = EpisodicLife(env)
    if "FIRE" in _action_meanings(env):
        env = FireReset(env)
    return gym.wrappers.FrameStackObservation(env, ATARI_STACK, padding_type="reset")


# ---------------------------------------------------------------------------------------------------------
# MinAtar
# ---------------------------------------------------------------------------------------------------------

# A colour for each channel (MinAtar's own rendering uses seaborn's cubehelix palette; these are fixed).
_PALETTE = np.array(
    [
        [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
        [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128],
    ],
    dtype=np.uint8,
)  # fmt: skip
_CELL = 16  # pixels per grid cell in rendered frames


class MinAtarFrames(gym.ObservationWrapper):
    """MinAtar observations as ``(c, 10, 10)`` uint8, and colour frames of ``160x160`` for videos.

    :param env: A MinAtar gymnasium env (made without a render mode).
    :param render_mode: ``"rgb_array"`` to render.
    """

    def __init__(self, env: gym.Env, render_mode: str | None = None) -> None:
        super().__init__(env)
        h, w, c = env.observation_space.shape or (0, 0, 0)
        self.observation_space = spaces.Box(0, 1, shape=(c, h, w), dtype=np.uint8)
        self._render_mode = render_mode
        self._last = np.zeros((c, h, w), dtype=np.uint8)

    @property
    def render_mode(self) -> str | None:  # type: ignore[override]
        return self._render_mode

    def observation(self, observation: np.ndarray) -> np.ndarray:
        self._last = np.ascontiguousarray(np.moveaxis(observation, -1, 0), dtype=np.uint8)
        return self._last

    def render(self) -> np.ndarray | None:
        if self._render_mode != "rgb_array":
            return None
        grid = self._last
        colours = _PALETTE[np.arange(grid.shape[0]) % len(_PALETTE)]
        # Each cell takes the colour of its last channel that is on (black when none is).
        on = grid.astype(bool)
        top = np.where(on.any(axis=0), grid.shape[0] - 1 - np.argmax(on[::-1], axis=0), -1)
        image = np.where(top[..., None] >= 0, colours[np.maximum(top, 0)], 0).astype(np.uint8)
        return np.repeat(np.repeat(image, _CELL, axis=0), _CELL, axis=1)


def make_minatar_env(env_id: str, render_mode: str | None = None, **kwargs: Any) -> gym.Env:
    """A MinAtar game (sticky actions 0.1 and difficulty ramping, the package's defaults as in the paper).

    :param env_id: ``MinAtar/Breakout-v1`` (the ``-v1`` ids use each game's minimal action set).
    :param render_mode: ``"rgb_array"`` renders colour frames.
    :param kwargs: Passed on to ``gym.make`` (``sticky_action_prob``, ``difficulty_ramping``...).
    """
    if render_mode not in (None, "rgb_array"):
        raise QiterError(f"MinAtar games render to 'rgb_array' only, not {render_mode!r}")
    return MinAtarFrames(gym.make(env_id, **kwargs), render_mode)


def refuse_images(env: gym.Env, what: str) -> None:
    """Raise a one-line :class:`QiterError` if ``env`` gives images to ``what``, a path for vector
    observations, naming the path that serves images (DQN's convolutional networks, on the torch learner)."""
    space = env.observation_space
    if is_image_space(space):
        name = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
        raise QiterError(
            f"{what} takes vector observations, but {name} gives {'x'.join(map(str, space.shape or ()))} images: "
            "images go through DQN (`qiter train ENV_ID`), whose convolutional networks run on the torch "
            "learner and take channel-first frames with discrete actions (docs/pixels.md)"
        )
