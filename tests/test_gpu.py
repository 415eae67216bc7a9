"""The CUDA path (autograd learner on the GPU): skipped cleanly where no GPU is present, as in CI."""

from __future__ import annotations

import pytest
import torch as th

from qiter.dqn import DQNConfig, train
from qiter.dqn.torch_learner import TorchLearner
from qiter.dqn.trainer import make_learner

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_backend_uses_autograd_on_cuda() -> None:
    from copy import deepcopy

    import gymnasium as gym

    from qiter.dqn.networks import make_q_network

    env = gym.make("CartPole-v1")
    q_net = make_q_network(env.observation_space, env.action_space)
    learner = make_learner(DQNConfig(device="cuda"), q_net, deepcopy(q_net))
    assert isinstance(learner, TorchLearner)
    assert next(q_net.parameters()).is_cuda


def test_training_on_cuda_runs_and_evaluates() -> None:
    config = DQNConfig(
        n_timesteps=1500, learning_starts=500, evaluation_interval=1500, n_eval_episodes=2, device="cuda"
    )
    result = train(config, progress=False, verbose=0)
    assert result.final_eval is not None
    assert next(result.q_net.parameters()).is_cuda
