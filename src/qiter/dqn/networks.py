"""Q-networks: the seed's :class:`QNetwork` and the dueling variant of Wang et al. (2016)."""

from __future__ import annotations

import numpy as np
import torch as th
import torch.nn as nn
from gymnasium import spaces

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}


def _mlp(
    in_dim: int,
    out_dim: int,
    n_hidden_units: int,
    n_hidden_layers: int,
    activation_fn: type[nn.Module],
    layer_norm: bool = False,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(n_hidden_layers):
        layers.append(nn.Linear(in_dim, n_hidden_units))
        if layer_norm:
            # Before the activation, as in Gallici et al. (2024): it keeps the features, and so the
            # Q-values a bootstrapped target can feed on, from growing without bound.
            layers.append(nn.LayerNorm(n_hidden_units))
        layers.append(activation_fn())
        in_dim = n_hidden_units
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class QNetwork(nn.Module):
    """
    A Q-Network for the DQN algorithm
    to estimate the q-value for a given observation.

    :param observation_space: Observation space of the env,
        contains information about the observation type and shape.
    :param action_space: Action space of the env,
        contains information about the number of actions.
    :param n_hidden_units: Number of units for each hidden layer.
    :param activation_fn: Activation function (ReLU by default)
    :param n_hidden_layers: Number of hidden layers (2 in the seed).
    :param layer_norm: Layer normalization after each hidden layer's linear map (not in the seed).
    """

    dueling = False

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        n_hidden_units: int = 64,
        activation_fn: type[nn.Module] = nn.ReLU,
        n_hidden_layers: int = 2,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        # Assume 1d space
        obs_dim = int(np.prod(observation_space.shape))
        self.n_actions = int(action_space.n)
        self.n_hidden_units = n_hidden_units
        self.q_net = _mlp(obs_dim, self.n_actions, n_hidden_units, n_hidden_layers, activation_fn, layer_norm)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """
        :param observations: A batch of observation (batch_size, obs_dim)
        :return: The Q-values for the given observations
            for all the action (batch_size, n_actions)
        """
        return self.q_net(observations)


class DuelingQNetwork(QNetwork):
    """Dueling architecture: Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a').

    The value and advantage streams share the hidden layers; the last ``nn.Linear`` of ``q_net`` has
    ``1 + n_actions`` outputs, the first being V(s) and the others A(s, .). That is the same function as two
    separate linear heads, and it keeps one layout for every network.
    """

    dueling = True

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        n_hidden_units: int = 64,
        activation_fn: type[nn.Module] = nn.ReLU,
        n_hidden_layers: int = 2,
        layer_norm: bool = False,
    ) -> None:
        super().__init__(
            observation_space, action_space, n_hidden_units, activation_fn, n_hidden_layers, layer_norm
        )
        last = self.q_net[-1]
        assert isinstance(last, nn.Linear)
        self.q_net[-1] = nn.Linear(last.in_features, 1 + self.n_actions)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """:return: Q-values (batch_size, n_actions) from the value and advantage streams."""
        out = self.q_net(observations)
        value, advantage = out[:, :1], out[:, 1:]
        # The mean-advantage baseline makes V and A identifiable (Wang et al., 2016, eq. 9).
        return value + advantage - advantage.mean(dim=1, keepdim=True)


def make_q_network(
    observation_space: spaces.Box,
    action_space: spaces.Discrete,
    n_hidden_units: int = 64,
    n_hidden_layers: int = 2,
    activation: str = "relu",
    dueling: bool = False,
    layer_norm: bool = False,
) -> QNetwork:
    """Build a plain or dueling Q-network from config values.

    :param observation_space: The (flat) Box observation space.
    :param action_space: The Discrete action space.
    :param n_hidden_units: Units per hidden layer.
    :param n_hidden_layers: Number of hidden layers.
    :param activation: One of ``relu``, ``tanh``, ``elu``, ``gelu``.
    :param dueling: Use the dueling head.
    :param layer_norm: Layer normalization after each hidden linear map.
    :return: The network (float32, on the CPU).
    """
    cls = DuelingQNetwork if dueling else QNetwork
    return cls(
        observation_space, action_space, n_hidden_units, ACTIVATIONS[activation], n_hidden_layers, layer_norm
    )
