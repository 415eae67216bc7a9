"""DQN on a continuous-control task through discretized actions (:class:`~qiter.wrappers.DiscretizeActions`).

The DQN agent itself is unchanged: this agent only sees the task through the wrapper, so the comparison
with the continuous-action agents is on the same environment, budget and run loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import gymnasium as gym

from qiter.config import checker
from qiter.dqn.agent import DQNAgent, require_network_input
from qiter.dqn.config import DQNConfig
from qiter.envs import make_env, require_box_observations, require_discrete_actions
from qiter.run_config import RunConfig
from qiter.wrappers import DiscretizeActions

__all__ = ["DiscretizedDQNAgent", "DiscretizedDQNConfig"]


@dataclass
class DiscretizedDQNConfig(DQNConfig):
    """A DQN config plus the discretization of a Box action space."""

    env_id: str = "Pendulum-v1"
    discretize: int = 5  # values per action dimension (both bounds included)
    discretize_mode: Literal["auto", "product", "per-dimension"] = "auto"

    def validate(self) -> None:
        super().validate()
        checker(self)(self.discretize >= 2, "discretize", "at least 2 bins per dimension")


class DiscretizedDQNAgent(DQNAgent):
    """DQN on ``discretize`` bins per action dimension of a bounded Box action space."""

    algo: ClassVar[str] = "dqn-discretized"
    checkpoint_format: ClassVar[str] = "qiter-dqn-discretized-v1"
    config_class = DiscretizedDQNConfig
    fixed_keys: ClassVar[tuple[str, ...]] = (*DQNAgent.fixed_keys, "discretize", "discretize_mode")

    @classmethod
    def make_env(cls, config: RunConfig, render_mode: str | None = None) -> gym.Env:
        assert isinstance(config, DiscretizedDQNConfig)
        env = make_env(config.env_id, render_mode=render_mode, flatten=True, **config.env_kwargs)
        try:
            return DiscretizeActions(env, config.discretize, config.discretize_mode)
        except BaseException:
            env.close()
            raise

    @classmethod
    def check_spaces(cls, env: gym.Env) -> None:
        require_box_observations(env, "DQN")
        require_discrete_actions(env, "DQN")
        require_network_input(env)
