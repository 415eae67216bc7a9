"""All DQN hyperparameters in one typed dataclass.

The field names follow the seed's ``run_dqn`` arguments; every improvement (Double DQN, n-step returns,
dueling heads, prioritized replay...) is an option here, off by default, so the defaults are the seed's
plain DQN. Presets (YAML files in ``qiter/presets``) and ``--set key=value`` overrides fill this class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from qiter.config import checker
from qiter.run_config import RunConfig


@dataclass
class DQNConfig(RunConfig):
    """Hyperparameters of one DQN run (defaults: the seed's ``run_dqn`` defaults).

    The run's own settings (env, seed, budget, evaluation, checkpoints, device) come from
    :class:`~qiter.run_config.RunConfig`.
    """

    # Replay buffer
    replay_buffer_size: int = 50_000
    batch_size: int = 64
    learning_starts: int = 100
    update_interval: int = 2
    gradient_steps: int = 1
    # Network
    n_hidden_units: int = 64
    n_hidden_layers: int = 2
    activation: Literal["relu", "tanh", "elu", "gelu"] = "relu"
    dueling: bool = False
    layer_norm: bool = False  # layer normalization in the hidden layers (keeps Q-values bounded)
    # auto: an MLP for vectors, the Nature CNN for 84x84 stacks, the MinAtar CNN for 10x10 grids
    # (docs/pixels.md); the CNNs have their own sizes (n_hidden_units/_layers and activation are the MLP's)
    network: Literal["auto", "mlp", "nature-cnn", "minatar-cnn"] = "auto"
    # Rewards stored as their sign (Atari's standard): for learning only, logs and evaluations stay unclipped
    clip_rewards: bool = False
    # Optimizer and loss
    learning_rate: float = 3e-4
    learning_rate_final: float | None = None  # linear decay to this value over the run when set
    learning_rate_decay_start: float = 0.0  # the decay starts after this fraction of the run
    loss: Literal["mse", "huber"] = "mse"
    max_grad_norm: float | None = None
    adam_eps: float = 1e-8
    # TD target (gamma is a RunConfig field: every value-based run has one)
    double_dqn: bool = False
    n_steps: int = 1
    n_step_cut: Literal["none", "greedy"] = "none"
    # Target network: hard copy every interval (in steps or episodes), or Polyak averaging when tau < 1
    target_network_update_interval: int = 1000
    target_update_unit: Literal["steps", "episodes"] = "steps"
    tau: float = 1.0
    # Exploration
    exploration_schedule: Literal["linear", "exponential"] = "linear"
    exploration_initial_eps: float = 1.0
    exploration_final_eps: float = 0.01
    exploration_fraction: float = 0.1  # linear: fraction of n_timesteps to anneal over
    exploration_decay_episodes: float = (
        100.0  # exponential: eps_min + (eps0 - eps_min) * exp(-episode / this)
    )
    # Prioritized experience replay
    prioritized_replay: bool = False
    per_alpha: float = 0.6
    per_beta_initial: float = 0.4
    per_beta_final: float = 1.0
    per_eps: float = 1e-6
    # Execution: the numpy fast path (CPU: MLPs and the MinAtar network) or autograd
    backend: Literal["auto", "numpy", "torch"] = "auto"

    def validate(self) -> None:
        """Check what the types cannot say: the run's settings (:meth:`RunConfig.validate`), then DQN's.

        :raises QiterError: Naming the key, its value and what is expected.
        """
        super().validate()
        need = checker(self)
        for key in (
            "replay_buffer_size",
            "batch_size",
            "update_interval",
            "gradient_steps",
            "n_hidden_units",
        ):
            need(getattr(self, key) >= 1, key, "at least 1")
        need(self.n_hidden_layers >= 0, "n_hidden_layers", "at least 0")
        need(self.learning_starts >= 0, "learning_starts", "at least 0")
        need(self.target_network_update_interval >= 1, "target_network_update_interval", "at least 1")
        need(self.n_steps >= 1, "n_steps", "at least 1")
        # isfinite: an infinite step size passes "> 0" but turns the weights into NaNs at the first update
        need(self.learning_rate > 0 and math.isfinite(self.learning_rate), "learning_rate", "positive")
        if self.learning_rate_final is not None:
            need(0 <= self.learning_rate_final < math.inf, "learning_rate_final", "at least 0 (or none)")
        need(0 <= self.learning_rate_decay_start < 1, "learning_rate_decay_start", "in [0, 1)")
        if self.max_grad_norm is not None:
            need(self.max_grad_norm > 0, "max_grad_norm", "positive (or none)")
        need(self.adam_eps > 0, "adam_eps", "positive")
        need(0 < self.tau <= 1, "tau", "in (0, 1] (1 is a hard copy)")
        for key in ("exploration_initial_eps", "exploration_final_eps", "exploration_fraction"):
            need(0 <= getattr(self, key) <= 1, key, "in [0, 1]")
        need(self.exploration_decay_episodes > 0, "exploration_decay_episodes", "positive")
        need(self.per_alpha >= 0, "per_alpha", "at least 0")
        need(0 <= self.per_beta_initial <= 1, "per_beta_initial", "in [0, 1]")
        need(0 <= self.per_beta_final <= 1, "per_beta_final", "in [0, 1]")
        need(self.per_eps > 0, "per_eps", "positive")
