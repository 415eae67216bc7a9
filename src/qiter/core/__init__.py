"""The DQN core: one batched gradient step for one DQN agent or N of them, on numpy or torch.

- :mod:`qiter.core.arrays`: ``Ops``, the array calls that differ between numpy and torch;
- :mod:`qiter.core.mlp`: the Q-network over a leading agent axis (``MLPSpec``, forward, hand-written
  backward; ReLU, tanh, ELU, GELU, layer normalization, dueling heads) and one agent's acting path;
- :mod:`qiter.core.adam`: ``torch.optim.Adam`` on one flat vector, per-element learning rates;
- :mod:`qiter.core.dqn`: ``BatchedDQN``, the TD step (Double DQN, n-step discounts, importance weights,
  MSE or Huber, gradient clipping, Adam, hard or Polyak targets) with per-agent hyperparameters.

The single agent uses it through :class:`qiter.dqn.core_learner.CoreLearner` (N = 1), populations through
:mod:`qiter.population.lockstep` (N agents).
"""

from __future__ import annotations

from qiter.core.dqn import AgentSettings, BatchedDQN, UpdateOutputs
from qiter.core.mlp import ACTIVATIONS, MLPSpec

__all__ = ["ACTIVATIONS", "AgentSettings", "BatchedDQN", "MLPSpec", "UpdateOutputs"]
