"""All DQN hyperparameters in one typed dataclass.

The field names follow the seed's ``run_dqn`` arguments; every improvement (Double DQN, n-step returns,
dueling heads, prioritized replay...) is an option here, off by default, so the defaults are the seed's
plain DQN. Presets (YAML files in ``qiter/presets``) and ``--set key=value`` overrides fill this class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DQNConfig:
    """Hyperparameters of one DQN run (defaults: the seed's ``run_dqn`` defaults)."""

    env_id: str = "CartPole-v1"
    seed: int = 2023
    n_timesteps: int = 20_000
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
    # Optimizer and loss
    learning_rate: float = 3e-4
    learning_rate_final: float | None = None  # linear decay to this value over the run when set
    loss: Literal["mse", "huber"] = "mse"
    max_grad_norm: float | None = None
    adam_eps: float = 1e-8
    # TD target
    gamma: float = 0.99
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
    # Evaluation, early stopping, checkpoints
    n_eval_episodes: int = 10
    evaluation_interval: int = 1000
    eval_exploration_rate: float = 0.0
    stop_at_return: float | None = None
    checkpoint_interval: int | None = None  # defaults to evaluation_interval
    save_buffer: bool = False
    # Execution
    device: str = "cpu"
    backend: Literal["auto", "numpy", "torch"] = "auto"
