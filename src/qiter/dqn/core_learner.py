"""The single DQN agent's CPU fast path: the DQN core (:mod:`qiter.core`) with one agent, on numpy.

Why: for the small MLPs of classic control, a torch forward/backward/Adam step costs hundreds of
microseconds of framework overhead for a few hundred thousand floating-point operations. The same
arithmetic in numpy, with every array preallocated and the parameters held in one flat vector, costs a
fraction of that (see ``docs/performance.md``).

Nothing about the algorithm changes: the torch network's parameters become *views* of the core's flat
vector (the network stays a normal ``nn.Module`` for checkpoints and evaluation, and sees every update),
the TD target and loss are those of :mod:`qiter.dqn.losses`, and Adam follows ``torch.optim.Adam``.
``tests/test_core.py`` checks the core against :class:`~qiter.dqn.torch_learner.TorchLearner`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch as th
import torch.nn as nn

from qiter.buffers.replay import ReplayBufferSamples
from qiter.core.arrays import NumpyOps
from qiter.core.conv import ConvSpec
from qiter.core.dqn import AgentSettings, BatchedDQN
from qiter.core.mlp import ConvLayer, HiddenLayer, MLPSpec, Parameters, act_one
from qiter.dqn.learner import Learner, TDSettings, UpdateResult
from qiter.dqn.networks import ConvQNetwork, QNetwork
from qiter.errors import QiterError

#: The activation modules the core computes, by name (ELU and GELU with PyTorch's default settings only).
_ACTIVATION_NAMES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.Tanh: "tanh",
    nn.ELU: "elu",
    nn.GELU: "gelu",
}


def _activation_name(module: nn.Module) -> str | None:
    name = _ACTIVATION_NAMES.get(type(module))
    if isinstance(module, nn.ELU) and module.alpha != 1.0:
        return None
    if isinstance(module, nn.GELU) and module.approximate != "none":
        return None
    return name


def network_spec(q_net: nn.Module) -> MLPSpec | None:
    """The core's description of a :class:`QNetwork`, or ``None`` when the core cannot run it.

    Accepted: ``Linear [-> LayerNorm] -> activation`` repeated, then a final ``Linear``, with one activation
    kind (:data:`qiter.core.mlp.ACTIVATIONS`) and either an affine layer norm in every hidden layer or in
    none (the layouts :func:`qiter.dqn.networks.make_q_network` builds), plain or dueling; and a
    :class:`ConvQNetwork` with one convolution of stride 1 without padding (the MinAtar network), whose
    flattened features go to such an MLP.

    :param q_net: The network to inspect.
    """
    if not isinstance(q_net, QNetwork):
        return None
    mods = list(q_net.q_net)
    conv: ConvSpec | None = None
    if isinstance(q_net, ConvQNetwork):
        conv = _conv_spec(q_net, mods)
        if conv is None:
            return None
        mods = mods[3:]
    if not mods or not isinstance(mods[-1], nn.Linear) or mods[-1].bias is None:
        return None
    sizes = [mods[-1].in_features]
    kinds: set[str | None] = set()
    norms: set[bool] = set()
    eps = 1e-5
    i = 0
    while i < len(mods) - 1:
        linear = mods[i]
        if not isinstance(linear, nn.Linear) or linear.bias is None:
            return None
        if i == 0:
            sizes = [linear.in_features]
        sizes.append(linear.out_features)
        i += 1
        norm = mods[i]
        if isinstance(norm, nn.LayerNorm):
            # The backward pass is written for the default affine norm over the layer's features.
            if norm.weight is None or norm.bias is None or norm.normalized_shape != (linear.out_features,):
                return None
            eps = float(norm.eps)
            i += 1
        norms.add(isinstance(norm, nn.LayerNorm))
        if i >= len(mods) - 1:
            return None
        kinds.add(_activation_name(mods[i]))
        i += 1
    if None in kinds or len(kinds) > 1 or len(norms) > 1:
        return None
    output = mods[-1]
    if output.in_features != sizes[-1]:
        return None
    sizes.append(output.out_features)
    activation = kinds.pop() if kinds else "relu"
    assert activation is not None
    if conv is not None and sizes[0] != conv.n_features:
        return None
    return MLPSpec(tuple(sizes), activation, norms == {True}, q_net.dueling, eps, conv)


def _conv_spec(q_net: ConvQNetwork, mods: list[nn.Module]) -> ConvSpec | None:
    """The convolution of ``Conv2d -> ReLU -> Flatten -> ...`` when the core computes it: one square
    kernel, stride 1, no padding, dilation or groups, with a bias."""
    if len(mods) < 4 or not isinstance(mods[1], nn.ReLU) or not isinstance(mods[2], nn.Flatten):
        return None
    conv = mods[0]
    if not isinstance(conv, nn.Conv2d) or conv.bias is None or conv.padding_mode != "zeros":
        return None
    kernel = conv.kernel_size[0]
    if conv.kernel_size != (kernel, kernel) or conv.stride != (1, 1) or conv.padding != (0, 0):
        return None
    if conv.dilation != (1, 1) or conv.groups != 1 or len(q_net.observation_shape) != 3:
        return None
    channels, height, width = q_net.observation_shape
    if channels != conv.in_channels or kernel > min(height, width):
        return None
    return ConvSpec(channels, height, width, conv.out_channels, kernel, q_net.scale)


def supports_core(q_net: nn.Module) -> bool:
    """Whether the numpy core can run this network: a CPU network that :func:`network_spec` accepts."""
    on_cpu = all(p.device.type == "cpu" for p in q_net.parameters())
    return on_cpu and network_spec(q_net) is not None


def torch_layout(core_view: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A view of a core tensor (weights ``(in, out)``, kernels ``(c * k * k, out)``) in torch's ``shape``
    (``(out, in)``, ``(out, c, k, k)``): the transpose, split into the kernel's axes for a convolution."""
    if core_view.ndim != 2:
        return core_view
    view = core_view.T
    view.shape = shape  # in place: raises rather than copy
    return view


def _core_views(module: nn.Module, views: Parameters, spec: MLPSpec) -> list[tuple[nn.Parameter, np.ndarray]]:
    """Pairs (torch parameter, the core's view of it in the core's shape: weights ``(in, out)``).

    With one agent the core's tensors come in the order of ``module.parameters()``."""
    pairs = []
    for p, view, shape in zip(module.parameters(), views.tensors, spec.tensor_shapes(), strict=True):
        core_view = view.reshape(shape)
        expected = tuple(reversed(shape)) if len(shape) == 2 else shape
        # A convolution's kernels (out, c, k, k) against the core's (c * k * k, out).
        actual = (p.shape[0], math.prod(p.shape[1:])) if p.ndim == 4 else tuple(p.shape)
        if actual != expected:
            raise ValueError(f"parameter of shape {tuple(p.shape)} where the core expects {expected}")
        pairs.append((p, core_view))
    return pairs


def share_parameters(module: nn.Module, views: Parameters, spec: MLPSpec) -> None:
    """Copy ``module``'s parameters into the core's vector, then make each parameter a view of it.

    Torch stores a linear weight ``(out, in)`` and a convolution's kernels ``(out, c, k, k)``; the core
    ``(in, out)`` and ``(c * k * k, out)``: the parameter becomes the transposed view, so torch and numpy
    see the same memory and the module reads every update.
    """
    for p, core_view in _core_views(module, views, spec):
        shape = tuple(p.shape)
        np.copyto(torch_layout(core_view, shape), p.detach().numpy())
        p.data = th.from_numpy(torch_layout(core_view, shape))


def numpy_actor(q_net: nn.Module) -> Callable[[np.ndarray], int] | None:
    """A greedy action function on numpy views of a CPU network's own weights (the torch parameters stay
    where they are), or ``None`` for a network the core does not run."""
    spec = network_spec(q_net)
    if spec is None or not supports_core(q_net):
        return None
    arrays = [p.detach().numpy() for p in q_net.parameters()]
    conv: ConvLayer | None = None
    if spec.conv is not None:  # kernels (out, c, k, k) as (c * k * k, out), still a view
        kernels, bias = arrays[:2]
        kernels = kernels.view()
        kernels.shape = (len(kernels), -1)  # in place: raises rather than act on a copy
        conv = (spec.conv.patch_index(), kernels.T, bias)
        arrays = arrays[2:]
    arrays = [a.T if a.ndim == 2 else a for a in arrays]  # weights as (in, out), still views
    per_layer = 4 if spec.layer_norm else 2
    n_hidden = len(spec.sizes) - 2
    hidden: list[HiddenLayer] = []
    for i in range(n_hidden):
        layer = arrays[i * per_layer : (i + 1) * per_layer]
        hidden.append((layer[0], layer[1], *((layer[2], layer[3]) if spec.layer_norm else (None, None))))
    w, b = arrays[n_hidden * per_layer :]
    return functools.partial(act_one, spec, hidden, (w, b), conv=conv)


class CoreLearner(Learner):
    """DQN gradient steps of one agent through the numpy DQN core, on a CPU :class:`QNetwork` pair.

    :param q_net: The online network (its parameters become views of the core's vector).
    :param q_target_net: The target network (same architecture; views of the core's target vector).
    :param settings: Learning rate, gamma, Double DQN, loss, gradient clipping, Adam's epsilon.
    :raises ValueError: For a network :func:`supports_core` refuses.
    """

    def __init__(self, q_net: QNetwork, q_target_net: QNetwork, settings: TDSettings) -> None:
        super().__init__(q_net, q_target_net, settings)
        spec = network_spec(q_net)
        if spec is None or not supports_core(q_net):
            raise ValueError(f"the numpy core cannot run this network (see supports_core): {q_net}")
        self.spec = spec
        agent = AgentSettings.make(
            1, settings.learning_rate, settings.gamma, settings.double_dqn, settings.loss == "huber",
            settings.max_grad_norm, settings.adam_eps,
        )  # fmt: skip
        self.core = BatchedDQN(NumpyOps(), 1, spec, agent, host_scalars=True)
        share_parameters(q_net, self.core.online, spec)
        share_parameters(q_target_net, self.core.target, spec)

    @property
    def learning_rate(self) -> float:
        return float(self.core.learning_rate[0])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.core.set_learning_rate(value)

    def act(self, observation: np.ndarray) -> int:
        """Greedy action of the online network for one observation."""
        return self.core.act_one(observation)

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network for a batch of observations."""
        # Images go as they are (uint8): the convolution's gather casts and scales them.
        obs = observations if self.spec.conv is not None else observations.astype(np.float32, copy=False)
        return self.core.greedy(obs[np.newaxis])[0]

    def update(self, samples: ReplayBufferSamples) -> UpdateResult:
        """One gradient step on a minibatch (numpy arrays, observations in float32)."""
        s = samples
        out = self.core.update(
            s.observations[np.newaxis], s.actions[np.newaxis, :, 0], s.rewards[np.newaxis],
            s.next_observations[np.newaxis], s.terminateds[np.newaxis],
            None if s.discounts is None else s.discounts[np.newaxis],
            None if s.weights is None else s.weights[np.newaxis],
        )  # fmt: skip
        return UpdateResult(float(out.loss[0]), float(out.mean_q[0]), float(out.max_q[0]), out.td_errors[0])

    def update_target(self, tau: float = 1.0) -> None:
        """Hard copy (``tau = 1``) or Polyak averaging ``target <- tau * online + (1 - tau) * target``."""
        self.core.update_target(tau=tau)

    def _moments(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Adam's two moments as per-parameter views in torch's shapes (weights ``(out, in)``)."""
        pairs = []
        shapes = [tuple(p.shape) for p in self.q_net.parameters()]
        for moment in (self.core.adam.exp_avg, self.core.adam.exp_avg_sq):
            views = Parameters(moment, self.spec, 1)
            pairs.append(
                [
                    torch_layout(v.reshape(s), shape)
                    for v, s, shape in zip(views.tensors, self.spec.tensor_shapes(), shapes)
                ]
            )
        return list(zip(*pairs))

    def optimizer_state(self) -> dict[str, object]:
        """Adam's state for checkpoints: the moments flat in the order and shapes of the network's
        parameters (the ``numpy-adam`` layout of every ``qiter-dqn-v2`` checkpoint)."""
        moments = self._moments()
        return {
            "kind": "numpy-adam",
            "exp_avg": th.from_numpy(np.concatenate([m.reshape(-1) for m, _ in moments])),
            "exp_avg_sq": th.from_numpy(np.concatenate([v.reshape(-1) for _, v in moments])),
            "step": int(self.core.adam.step_count),
            "lr": self.learning_rate,
        }

    def load_optimizer_state(self, state: dict[str, object]) -> None:
        """Restore Adam's state from a checkpoint: this learner's own, or, for the MinAtar network (which
        went through the torch learner before the core ran it), torch Adam's.

        :raises QiterError: A torch optimizer state for an MLP (resume it with backend torch).
        """
        if state.get("kind") == "torch-adam" and self.spec.conv is not None:
            self._load_torch_adam(state)
            return
        if state.get("kind") != "numpy-adam":
            raise QiterError(
                f"the checkpoint's optimizer state is {state.get('kind')!r} (backend torch): resume it with backend torch"
            )
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        assert isinstance(exp_avg, th.Tensor) and isinstance(exp_avg_sq, th.Tensor)
        offset = 0
        for m, v in self._moments():
            size = m.size
            np.copyto(m, exp_avg[offset : offset + size].numpy().reshape(m.shape))
            np.copyto(v, exp_avg_sq[offset : offset + size].numpy().reshape(v.shape))
            offset += size
        self.core.adam.step_count = int(state["step"])  # type: ignore[call-overload]
        self.learning_rate = float(state["lr"])  # type: ignore[arg-type]

    def _load_torch_adam(self, state: dict[str, object]) -> None:
        """Adam's moments and step from a ``torch.optim.Adam`` state dict (parameters in module order)."""
        inner = state["state"]
        assert isinstance(inner, dict)
        per_param, group = inner["state"], inner["param_groups"][0]
        if len(group["params"]) != len(self._moments()):
            raise QiterError("the checkpoint's optimizer state does not match the network")
        steps = set()
        for index, (m, v) in zip(group["params"], self._moments()):
            saved = per_param.get(index)
            if saved is None:  # a parameter torch never stepped: zero moments
                m[...], v[...] = 0.0, 0.0
                continue
            np.copyto(m, saved["exp_avg"].numpy())
            np.copyto(v, saved["exp_avg_sq"].numpy())
            steps.add(int(saved["step"]))
        self.core.adam.step_count = max(steps, default=0)
        self.learning_rate = float(group["lr"])
