"""DQN from pixels: Atari and MinAtar environments, convolutional Q-networks, and the one-line refusals."""

from __future__ import annotations

import builtins
import copy
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from qiter.dqn.agent import DQNAgent, build_q_network, network_kind
from qiter.dqn.config import DQNConfig
from qiter.dqn.networks import ConvQNetwork
from qiter.envs import make_env
from qiter.errors import QiterError
from qiter.evaluation import run_episodes
from qiter.pixel_envs import EpisodicLife, is_image_space

ale_py = pytest.importorskip("ale_py")
pytest.importorskip("minatar")

ATARI = spaces.Box(0, 255, shape=(4, 84, 84), dtype=np.uint8)
MINATAR = spaces.Box(0, 1, shape=(4, 10, 10), dtype=np.uint8)


def test_atari_preprocessing() -> None:
    for env_id in ("ALE/Breakout-v5", "BreakoutNoFrameskip-v4"):
        env = make_env(env_id)
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        # FIRE at reset, frame skip 4 and max-pooling, life loss and stacking, outermost last.
        names = []
        inner: Any = env
        while isinstance(inner, gym.Wrapper):
            names.append(type(inner).__name__)
            inner = inner.env
        assert names[:4] == ["FrameStackObservation", "FireReset", "EpisodicLife", "AtariPreprocessing"]
        assert inner.unwrapped._frameskip == 1
        env.close()


def test_lost_life_ends_the_learning_episode_not_the_game() -> None:
    """Breakout's 5 lives: the learner sees 5 episodes, an evaluation sees 1 game."""
    env = make_env("ALE/Breakout-v5")
    env.reset(seed=0)
    life_ends, game_over, steps = 0, False, 0
    while not game_over:
        _, _, terminated, truncated, info = env.step(0)  # never moves: each ball is lost
        steps += 1
        if terminated or truncated:
            life_ends += 1
            game_over = info["game_over"]
            env.reset()
    assert life_ends == 5
    returns = run_episodes(env, lambda obs: 0, 2, seed=0)
    assert returns.shape == (2,) and (returns == 0).all()
    lives: Any = env
    while not isinstance(lives, EpisodicLife):
        lives = lives.env
    assert lives.lives == 5  # a new game after each evaluation episode
    env.close()


def test_minatar_frames_and_colour_render() -> None:
    env = make_env("MinAtar/Breakout-v1", render_mode="rgb_array")
    obs, _ = env.reset(seed=0)
    assert env.observation_space == MINATAR and obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
    frame = env.render()
    assert frame is not None and frame.shape == (160, 160, 3) and frame.dtype == np.uint8
    # Colour: the ball, the paddle and the bricks are not all one grey.
    assert len({tuple(c) for c in frame.reshape(-1, 3)}) >= 3
    assert not all(np.ptp(c) == 0 for c in frame.reshape(-1, 3) if c.any())
    env.close()


def test_unknown_game_and_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(
        QiterError, match=r"unknown environment id 'ALE/Pongg-v5'\. Did you mean: ALE/Pong-v5"
    ):
        make_env("ALE/Pongg-v5")
    with pytest.raises(QiterError, match="Did you mean: MinAtar/Breakout-v1"):
        make_env("MinAtar/Breakot-v1")
    real_import = builtins.__import__

    def no_packages(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(("ale_py", "minatar")):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_packages)
    for name in [m for m in __import__("sys").modules if m.startswith(("ale_py", "minatar"))]:
        monkeypatch.delitem(__import__("sys").modules, name)
    with pytest.raises(
        QiterError, match=r'ALE/Pong-v5 needs ale-py, which is not installed: pip install "qiter\[atari\]"'
    ):
        make_env("ALE/Pong-v5")
    with pytest.raises(
        QiterError, match=r'needs minatar, which is not installed: pip install "qiter\[minatar\]"'
    ):
        make_env("MinAtar/Asterix-v1")


@pytest.mark.parametrize("space,torso,hidden", [(ATARI, "nature-cnn", 512), (MINATAR, "minatar-cnn", 128)])
@pytest.mark.parametrize("dueling", [False, True])
def test_conv_networks(space: spaces.Box, torso: str, hidden: int, dueling: bool) -> None:
    config = DQNConfig(env_id="x", dueling=dueling)
    assert network_kind(config, space) == torso
    net = build_q_network(config, space, spaces.Discrete(6))
    assert isinstance(net, ConvQNetwork) and net.torso == torso and net.n_hidden_units == hidden
    convs = [m for m in net.q_net if isinstance(m, th.nn.Conv2d)]
    assert [c.out_channels for c in convs] == ([32, 64, 64] if torso == "nature-cnn" else [16])
    pixels = th.as_tensor(
        np.random.default_rng(0).integers(0, int(space.high.max()) + 1, size=(5, *space.shape)),
        dtype=th.uint8,
    )
    q = net(pixels)
    assert q.shape == (5, 6)
    # uint8 pixels go in as they are stored and are scaled to [0, 1] inside (by 1/255 for Atari).
    assert net.scale == pytest.approx(1 / float(space.high.max()))
    th.testing.assert_close(q, net(pixels.float()))
    if not dueling:
        th.testing.assert_close(q, net.q_net(pixels.float() / float(space.high.max())))


def test_nature_cnn_in_channels_last_is_the_same_function() -> None:
    """The Nature CNN computes in the channels-last format (faster convolutions on the CPU): the same
    Q-values and gradients as in the default format, and its state_dict loads into either."""
    net = build_q_network(DQNConfig(env_id="x"), ATARI, spaces.Discrete(6))
    assert isinstance(net, ConvQNetwork)
    assert net.q_net[0].weight.is_contiguous(memory_format=th.channels_last)
    plain = copy.deepcopy(net).to(memory_format=th.contiguous_format)
    plain.memory_format = th.contiguous_format
    assert plain.q_net[0].weight.is_contiguous()
    pixels = th.as_tensor(np.random.default_rng(1).integers(0, 256, size=(8, *ATARI.shape)), dtype=th.uint8)
    q, q_plain = net(pixels), plain(pixels)
    th.testing.assert_close(q, q_plain, rtol=1e-5, atol=1e-5)
    q.square().sum().backward()
    q_plain.square().sum().backward()
    for p, p_plain in zip(net.parameters(), plain.parameters(), strict=True):
        th.testing.assert_close(p.grad, p_plain.grad, rtol=1e-4, atol=1e-5)
    fresh = build_q_network(DQNConfig(env_id="x", seed=1), ATARI, spaces.Discrete(6))
    fresh.load_state_dict(plain.state_dict())
    th.testing.assert_close(fresh(pixels), q_plain, rtol=1e-5, atol=1e-5)


def test_refusals_in_one_line() -> None:
    with pytest.raises(QiterError, match="network 'mlp' cannot take 4x84x84 image observations"):
        network_kind(DQNConfig(env_id="x", network="mlp"), ATARI)
    with pytest.raises(QiterError, match="takes channel-first images"):
        network_kind(DQNConfig(env_id="x", network="nature-cnn"), spaces.Box(-1, 1, (8,)))
    with pytest.raises(
        QiterError, match=r"numpy fast path .* MinAtar network; the nature-cnn network goes through the torch"
    ):
        build_q_network(DQNConfig(env_id="x", backend="numpy"), ATARI, spaces.Discrete(3))
    # The MinAtar network runs on the numpy DQN core.
    assert isinstance(
        build_q_network(DQNConfig(env_id="x", backend="numpy"), MINATAR, spaces.Discrete(3)), ConvQNetwork
    )
    assert network_kind(DQNConfig(env_id="x"), spaces.Box(-1, 1, (8,))) == "mlp"
    # Images with their channels last (CarRacing's 96x96x3) fit no network: refused, not flattened.
    assert is_image_space(spaces.Box(0, 255, (96, 96, 3), np.uint8))

    class ChannelsLast(gym.Env[np.ndarray, int]):
        observation_space = spaces.Box(0, 255, (96, 96, 3), np.uint8)
        action_space = spaces.Discrete(3)

    with pytest.raises(QiterError, match=r"DQN's MLP cannot take ChannelsLast's 96x96x3 image observations"):
        DQNAgent.check_spaces(ChannelsLast())
    from qiter.data import collect_data

    with pytest.raises(
        QiterError,
        match=r"FQI takes vector observations, but MinAtar/Breakout-v1 gives 4x10x10 images: images go through DQN",
    ):
        collect_data("MinAtar/Breakout-v1", n_steps=10)
    from qiter.continuous.ddpg import TD3Agent

    class ImageControl(ChannelsLast):
        action_space = spaces.Box(-1, 1, (2,))

    with pytest.raises(
        QiterError, match=r"TD3 takes vector observations, but ImageControl gives 96x96x3 images"
    ):
        TD3Agent.check_spaces(ImageControl())
