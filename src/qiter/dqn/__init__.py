"""Deep Q-Networks: the seed tutorial's API, and the trainer with every variant as an option.

The seed's names are importable from here, so a tutorial cell runs with ``from qiter.dqn import ...``.
"""

from qiter.buffers.replay import ReplayBuffer, ReplayBufferSamples, TorchReplayBufferSamples
from qiter.dqn.agent import DQNAgent
from qiter.dqn.config import DQNConfig
from qiter.dqn.networks import DuelingQNetwork, QNetwork, make_q_network
from qiter.dqn.trainer import DivergenceError, TrainResult, train
from qiter.dqn.tutorial import (
    collect_one_step,
    dqn_update,
    epsilon_greedy_action_selection,
    evaluate_policy,
    linear_schedule,
    run_dqn,
)

__all__ = [
    "DQNAgent",
    "DQNConfig",
    "DivergenceError",
    "DuelingQNetwork",
    "QNetwork",
    "ReplayBuffer",
    "ReplayBufferSamples",
    "TorchReplayBufferSamples",
    "TrainResult",
    "collect_one_step",
    "dqn_update",
    "epsilon_greedy_action_selection",
    "evaluate_policy",
    "linear_schedule",
    "make_q_network",
    "run_dqn",
    "train",
]
