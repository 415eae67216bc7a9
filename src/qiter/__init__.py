"""qiter: value-based reinforcement learning, from tabular Q-learning to fast DQN."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qiter.agent import TrainedAgent

__all__ = ["__version__", "load_agent"]


def load_agent(path: Any) -> TrainedAgent:
    """Load a trained agent of any algorithm from a run folder or a checkpoint.

    ``qiter.load_agent("runs/CartPole-v1/dqn-0-...").predict(obs)`` gives the greedy action;
    ``.evaluate("CartPole-v1", 10)`` plays full episodes. See :func:`qiter.agent.load_agent`.
    """
    from qiter.agent import load_agent as load  # torch loads slowly: only when asked for

    return load(path)
