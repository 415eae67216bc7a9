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


# ---------------------------------------------------------------------------------------------------------
# Convolutional Q-networks for image observations
# ---------------------------------------------------------------------------------------------------------

#: The convolutional torsos: name -> (conv layers as (out_channels, kernel, stride), hidden units).
CONV_TORSOS: dict[str, tuple[tuple[tuple[int, int, int], ...], int]] = {
    # Mnih et al. (2015), "Human-level control through deep reinforcement learning", for 4x84x84 stacks.
    "nature-cnn": (((32, 8, 4), (64, 4, 2), (64, 3, 1)), 512),
    # Young & Tian (2019), MinAtar: one 3x3 convolution of 16 channels, then 128 units, for 10x10 grids.
    "minatar-cnn": (((16, 3, 1),), 128),
}


class ConvQNetwork(QNetwork):
    """A convolutional Q-network: convolutions, one hidden layer, then a linear head of ``n_actions``
    outputs, or ``1 + n_actions`` with the dueling head (as in :class:`DuelingQNetwork`), all in one
    ``q_net`` sequence. The DQN core runs the MinAtar network (one stride-1 convolution) on the CPU
    (:func:`qiter.dqn.core_learner.network_spec`), autograd the Nature CNN.

    Observations arrive as they are stored, uint8 pixels, and are scaled to [0, 1] here, on the device:
    a batch travels as a quarter of its float32 size. The Nature CNN computes in the channels-last memory
    format (the same function: only the strides of its convolutions' weights and inputs change), which
    oneDNN's convolutions run faster: 47-52 ms against 62-64 ms for a forward and backward pass of 32
    stacks on one Xeon thread (docs/pixels.md). The MinAtar network keeps the default format: on the CPU
    it runs on the DQN core, which reads its weights as they are laid out.

    :param observation_space: A channel-first image space ``(c, h, w)``.
    :param action_space: The Discrete action space.
    :param torso: A key of :data:`CONV_TORSOS`.
    :param dueling: Use the dueling head.
    """

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Discrete,
        torso: str = "nature-cnn",
        dueling: bool = False,
    ) -> None:
        nn.Module.__init__(self)
        convs, n_hidden = CONV_TORSOS[torso]
        self.torso = torso
        self.dueling = dueling
        self.n_actions = int(action_space.n)
        self.n_hidden_units = n_hidden
        self.observation_shape = tuple(int(d) for d in observation_space.shape)
        high = np.asarray(observation_space.high).max()
        # 255 for Atari's grayscale pixels, 1 for MinAtar's 0/1 channels.
        self.scale = 1.0 / float(high) if np.isfinite(high) and high > 0 else 1.0
        layers: list[nn.Module] = []
        in_channels = observation_space.shape[0]
        for out_channels, kernel, stride in convs:
            layers += [nn.Conv2d(in_channels, out_channels, kernel, stride), nn.ReLU()]
            in_channels = out_channels
        layers.append(nn.Flatten())
        with th.no_grad():
            n_flat = int(nn.Sequential(*layers)(th.zeros(1, *observation_space.shape)).shape[1])
        layers += [nn.Linear(n_flat, n_hidden), nn.ReLU(), nn.Linear(n_hidden, self.n_actions + int(dueling))]
        self.q_net = nn.Sequential(*layers)
        self.memory_format = th.channels_last if torso == "nature-cnn" else th.contiguous_format
        for layer in self.q_net:
            if isinstance(layer, nn.Conv2d):
                layer.weight.data = layer.weight.data.contiguous(memory_format=self.memory_format)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """:return: Q-values ``(batch_size, n_actions)`` of uint8 (or float) image observations."""
        first = self.q_net[0]
        assert isinstance(first, nn.Conv2d)
        scaled = observations.to(first.weight.dtype) * self.scale
        out = self.q_net(scaled.contiguous(memory_format=self.memory_format))
        if not self.dueling:
            return out
        value, advantage = out[:, :1], out[:, 1:]
        return value + advantage - advantage.mean(dim=1, keepdim=True)


def conv_torso_for(observation_space: spaces.Box) -> str | None:
    """The convolutional network for a channel-first image space: ``minatar-cnn`` for small grids (MinAtar's
    10x10), ``nature-cnn`` for frames of 36 pixels or more (Atari's 84x84); ``None`` when neither fits
    (a flat vector, or an image with its channels last)."""
    shape = observation_space.shape
    if len(shape) != 3 or shape[0] > 16 or shape[1] < 3 or shape[2] < 3:
        return None
    return "nature-cnn" if min(shape[1:]) >= 36 else "minatar-cnn"
