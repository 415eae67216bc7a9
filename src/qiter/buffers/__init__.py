"""Replay buffers: uniform (:class:`ReplayBuffer`) and prioritized (:class:`PrioritizedReplayBuffer`)."""

from qiter.buffers.prioritized import PrioritizedReplayBuffer, SumTree
from qiter.buffers.replay import ReplayBuffer, ReplayBufferSamples, TorchReplayBufferSamples

__all__ = [
    "PrioritizedReplayBuffer",
    "ReplayBuffer",
    "ReplayBufferSamples",
    "SumTree",
    "TorchReplayBufferSamples",
]
