"""A small DQN config for tests: CartPole, a few thousand steps, short evaluations."""

from __future__ import annotations

from qiter.dqn import DQNConfig


def small_config(**kwargs: object) -> DQNConfig:
    """2000 steps on CartPole-v1 with learning from step 200; ``kwargs`` override any field."""
    values: dict[str, object] = {
        "env_id": "CartPole-v1",
        "n_timesteps": 2000,
        "learning_starts": 200,
        "replay_buffer_size": 5000,
        "target_network_update_interval": 100,
        "evaluation_interval": 1000,
        "n_eval_episodes": 2,
        "seed": 3,
    }
    values.update(kwargs)
    return DQNConfig(**values)  # type: ignore[arg-type]
