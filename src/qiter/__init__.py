"""qiter: value-based reinforcement learning, from tabular Q-learning to fast DQN."""

from __future__ import annotations

__version__ = "0.1.0"
