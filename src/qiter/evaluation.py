"""Running evaluation episodes with any action function, optionally recorded to mp4."""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym
import numpy as np

from qiter.policies import epsilon_greedy
from qiter.video import DEFAULT_VIDEO_FOLDER, finish_video, video_env


def run_episodes(
    env: gym.Env,
    act: Callable[[np.ndarray], Any],
    n_episodes: int,
    exploration_rate: float = 0.0,
    rng: np.random.Generator | None = None,
    video_name: str | None = None,
    video_folder: str | os.PathLike[str] = DEFAULT_VIDEO_FOLDER,
    seed: int | None = None,
) -> np.ndarray:
    """Play ``n_episodes`` full episodes (whole games in Atari) and return their undiscounted returns.

    :param env: The environment (``render_mode="rgb_array"`` to record a video).
    :param act: Greedy action for one observation.
    :param n_episodes: Number of episodes.
    :param exploration_rate: Probability of a random action instead of ``act``'s.
    :param rng: Random generator for exploration (numpy's global one when ``None``).
    :param video_name: Record every episode into ``video_folder/video_name.mp4``.
    :param video_folder: Folder for the video.
    :param seed: Seed for the first reset (later resets continue the env's random stream).
    :return: The returns, shape (n_episodes,).
    """
    recorder = video_env(env, video_name, video_folder) if video_name is not None else None
    play_env: gym.Env = recorder if recorder is not None else env
    uniform = rng.random if rng is not None else np.random.rand
    returns = np.zeros(n_episodes)
    obs, _ = play_env.reset(seed=seed)
    for episode in range(n_episodes):
        done = False
        while not done:
            if exploration_rate > 0:
                action = epsilon_greedy(
                    partial(act, obs), play_env.action_space.sample, exploration_rate, uniform
                )
            else:
                action = act(obs)
            obs, reward, terminated, truncated, info = play_env.step(action)
            returns[episode] += float(reward)
            if terminated or truncated:
                obs, _ = play_env.reset()
                # A lost life ends an Atari episode for learning only (qiter.pixel_envs.EpisodicLife): play on.
                done = info.get("game_over", True)
    if recorder is not None:
        path = finish_video(recorder)
        print(f"Saving video to {path}")
    return returns
