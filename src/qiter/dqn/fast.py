"""The fast path: a DQN update written out by hand in numpy, on the network's own parameters.

Why: for the small MLPs of classic control, a torch forward/backward/Adam step costs hundreds of
microseconds of framework overhead for a few hundred thousand floating-point operations. The same
arithmetic in numpy, with every array preallocated and the parameters held in one flat vector, costs a
fraction of that (see ``docs/performance.md``).

Nothing about the algorithm changes: the numpy arrays are *views* of the torch parameters (the network
stays a normal ``nn.Module`` for checkpoints and evaluation), the TD target and loss are those of
:mod:`qiter.dqn.losses`, and Adam follows ``torch.optim.Adam`` step for step. ``tests/test_fast.py`` checks
both paths against each other on the same batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch as th
import torch.nn as nn

from qiter.buffers.replay import ReplayBufferSamples
from qiter.dqn.learner import Learner, TDSettings
from qiter.dqn.networks import QNetwork

SUPPORTED_ACTIVATIONS = (nn.ReLU, nn.Tanh)


def supports_numpy(q_net: nn.Module) -> bool:
    """Whether the numpy path can run this network (a CPU MLP of Linear layers with ReLU or Tanh)."""
    if not isinstance(q_net, QNetwork):
        return False
    mods = list(q_net.q_net)
    activations = [m for m in mods if not isinstance(m, nn.Linear)]
    on_cpu = all(p.device.type == "cpu" for p in q_net.parameters())
    same_kind = len({type(m) for m in activations}) <= 1
    return on_cpu and same_kind and all(isinstance(m, SUPPORTED_ACTIVATIONS) for m in activations)


def flatten_parameters(module: nn.Module) -> np.ndarray:
    """Move all parameters of ``module`` into one contiguous buffer and return it as a numpy array.

    Each ``nn.Parameter`` becomes a view into that buffer, so torch and numpy see the same memory: an
    optimizer step on the flat vector updates the module, and element-wise ops (Adam, Polyak averaging,
    gradient clipping) run as a handful of vector operations instead of one per tensor.
    """
    params = list(module.parameters())
    flat = th.zeros(sum(p.numel() for p in params), dtype=params[0].dtype)
    offset = 0
    for p in params:
        n = p.numel()
        flat[offset : offset + n].copy_(p.detach().reshape(-1))
        p.data = flat[offset : offset + n].view_as(p)
        offset += n
    return flat.numpy()


class NumpyQFunction:
    """numpy views of a :class:`QNetwork`'s layers: forward passes without torch overhead.

    :param q_net: A CPU network (its parameters are shared, not copied).
    """

    def __init__(self, q_net: QNetwork) -> None:
        linears = [m for m in q_net.q_net if isinstance(m, nn.Linear)]
        self.weights = [m.weight.detach().numpy() for m in linears]  # (out, in), as torch stores them
        self.biases = [m.bias.detach().numpy() for m in linears]
        activations = [m for m in q_net.q_net if not isinstance(m, nn.Linear)]
        self.tanh = bool(activations) and isinstance(activations[0], nn.Tanh)
        self.dueling = q_net.dueling
        self.dtype = self.weights[0].dtype
        # (W^T, b) per layer, the transposes made once: still views of the live weights.
        self.layers = [(w.T, b) for w, b in zip(self.weights, self.biases)]
        # The hidden layers and the output layer apart, so the per-step loops test nothing per layer.
        self._hidden = list(zip(self.weights[:-1], self.biases[:-1]))
        self._output = (self.weights[-1], self.biases[-1])

    def forward(self, x: np.ndarray, cache: list[np.ndarray] | None = None) -> np.ndarray:
        """Q-values of a batch of observations, shape (batch, n_actions).

        :param x: Observations, shape (batch, obs_dim).
        :param cache: When given, the input of every layer is appended to it (for :meth:`backward`).
        """
        h = x
        last = len(self.layers) - 1
        for i, (w_t, b) in enumerate(self.layers):
            if cache is not None:
                cache.append(h)
            h = h @ w_t
            h += b
            if i < last:
                # Inlined activation: this runs twice per layer and update, a method call shows.
                if self.tanh:
                    np.tanh(h, out=h)
                else:
                    np.maximum(h, 0, out=h)
        if self.dueling:
            advantage = h[:, 1:]
            return h[:, :1] + advantage - advantage.mean(axis=1, keepdims=True)
        return h

    def act(self, observation: np.ndarray) -> int:
        """Greedy action for one observation (matrix-vector products, no batch dimension)."""
        h = observation
        # Once per environment step: the activation is chosen outside the loop over layers.
        if self.tanh:
            for w, b in self._hidden:
                h = w @ h
                h += b
                np.tanh(h, out=h)
        else:
            for w, b in self._hidden:
                h = w @ h
                h += b
                np.maximum(h, 0, out=h)
        w, b = self._output
        h = w @ h
        h += b
        # In a dueling head V(s) and the mean advantage are the same for every action.
        return int((h[1:] if self.dueling else h).argmax())

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of observations."""
        return self.forward(observations.astype(self.dtype, copy=False)).argmax(axis=1)

    def backward(
        self, cache: list[np.ndarray], d_q: np.ndarray, grads_w: list[np.ndarray], grads_b: list[np.ndarray]
    ) -> None:
        """Backpropagate ``d_q = dLoss/dQ`` (batch, n_actions) and write the gradients in place.

        :param cache: Layer inputs recorded by :meth:`forward`.
        :param d_q: Gradient of the loss with respect to the Q-values.
        :param grads_w: Output arrays for the weight gradients (views of the flat gradient).
        :param grads_b: Output arrays for the bias gradients.
        """
        if self.dueling:
            # Q_j = V + A_j - mean(A): dV = sum_j dQ_j, dA_k = dQ_k - mean_j dQ_j.
            delta = np.empty((d_q.shape[0], d_q.shape[1] + 1), dtype=d_q.dtype)
            delta[:, 0] = d_q.sum(axis=1)
            delta[:, 1:] = d_q - d_q.mean(axis=1, keepdims=True)
        else:
            delta = d_q
        for i in range(len(self.weights) - 1, -1, -1):
            h_in = cache[i]
            np.matmul(delta.T, h_in, out=grads_w[i])
            np.add.reduce(delta, 0, out=grads_b[i])
            if i > 0:
                delta = delta @ self.weights[i]
                # h_in is the activation output of the previous layer: its derivative is cheap from it.
                if self.tanh:
                    delta *= 1.0 - h_in * h_in
                else:
                    delta *= h_in > 0


class NumpyAdam:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) on one flat parameter vector, in place.

    :param params: The flat parameters (updated in place).
    :param lr: Learning rate.
    :param betas: Adam's decay rates.
    :param eps: Term added to the denominator.
    """

    def __init__(
        self, params: np.ndarray, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = np.zeros_like(params)
        self.exp_avg_sq = np.zeros_like(params)
        self.step_count = 0
        self._tmp = np.empty_like(params)

    def step(self, grad: np.ndarray) -> None:
        """One Adam step with gradient ``grad`` (same shape as the parameters)."""
        self.step_count += 1
        tmp = self._tmp
        self.exp_avg *= self.beta1
        np.multiply(grad, 1.0 - self.beta1, out=tmp)
        self.exp_avg += tmp
        self.exp_avg_sq *= self.beta2
        np.multiply(grad, grad, out=tmp)
        tmp *= 1.0 - self.beta2
        self.exp_avg_sq += tmp
        bias_correction1 = 1.0 - self.beta1**self.step_count
        bias_correction2 = 1.0 - self.beta2**self.step_count
        step_size = self.lr / bias_correction1
        np.sqrt(self.exp_avg_sq, out=tmp)
        tmp /= math.sqrt(bias_correction2)
        tmp += self.eps
        np.divide(self.exp_avg, tmp, out=tmp)
        tmp *= step_size
        self.params -= tmp

    def state_dict(self) -> dict[str, object]:
        """Optimizer state for checkpoints (tensors, so that ``torch.load(weights_only=True)`` reads it)."""
        return {
            "exp_avg": th.from_numpy(self.exp_avg.copy()),
            "exp_avg_sq": th.from_numpy(self.exp_avg_sq.copy()),
            "step": self.step_count,
            "lr": self.lr,
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        assert isinstance(exp_avg, th.Tensor) and isinstance(exp_avg_sq, th.Tensor)
        self.exp_avg[:] = exp_avg.numpy()
        self.exp_avg_sq[:] = exp_avg_sq.numpy()
        self.step_count = int(state["step"])  # type: ignore[call-overload]
        self.lr = float(state["lr"])  # type: ignore[arg-type]


class NumpyLearner(Learner):
    """DQN gradient steps in numpy on a CPU :class:`QNetwork` and its target network.

    :param q_net: The online network (its parameters are moved into one flat buffer).
    :param q_target_net: The target network (same architecture).
    :param settings: Learning rate, gamma, Double DQN, loss, gradient clipping, Adam's epsilon.
    """

    def __init__(self, q_net: QNetwork, q_target_net: QNetwork, settings: TDSettings) -> None:
        super().__init__(q_net, q_target_net, settings)
        self.params = flatten_parameters(q_net)
        self.target_params = flatten_parameters(q_target_net)
        self.q = NumpyQFunction(q_net)
        self.q_target = NumpyQFunction(q_target_net)
        self.huber = settings.loss == "huber"
        self.optimizer = NumpyAdam(self.params, settings.learning_rate, eps=settings.adam_eps)
        self.grad = np.zeros_like(self.params)
        # Views of the flat gradient in the order of q_net.parameters(): weight, bias of each Linear.
        self.grads_w: list[np.ndarray] = []
        self.grads_b: list[np.ndarray] = []
        offset = 0
        for w, b in zip(self.q.weights, self.q.biases):
            self.grads_w.append(self.grad[offset : offset + w.size].reshape(w.shape))
            offset += w.size
            self.grads_b.append(self.grad[offset : offset + b.size])
            offset += b.size
        self._tmp = np.empty_like(self.params)
        self._d_q: np.ndarray | None = None
        self._arange = np.arange(0)

    @property
    def learning_rate(self) -> float:
        return self.optimizer.lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.optimizer.lr = value

    def act(self, observation: np.ndarray) -> int:
        """Greedy action of the online network for one observation."""
        return self.q.act(observation)

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions of the online network for a batch of observations."""
        return self.q.greedy(observations)

    def update(self, samples: ReplayBufferSamples) -> tuple[float, float, np.ndarray]:
        """One gradient step on a minibatch.

        :param samples: The minibatch (numpy arrays, observations in the network's dtype).
        :return: ``(loss, mean Q(s, a), td_errors)``.
        """
        obs, next_obs = samples.observations, samples.next_observations
        batch_size = len(obs)
        rows = self._rows(batch_size)
        actions = samples.actions[:, 0]
        # TD target, no gradient: y = r + gamma^k * (1 - terminated) * V_target(s')
        next_q = self.q_target.forward(next_obs)
        if self.double_dqn:
            next_values = next_q[rows, self.q.forward(next_obs).argmax(axis=1)]
        else:
            next_values = np.maximum.reduce(next_q, 1)
        discount = self.gamma if samples.discounts is None else samples.discounts
        td_target = samples.rewards + discount * next_values * ~samples.terminateds
        # Forward with the online network, keeping layer inputs for backpropagation.
        cache: list[np.ndarray] = []
        q_values = self.q.forward(obs, cache)
        current_q = q_values[rows, actions]
        td_errors = current_q - td_target
        weights = samples.weights
        if self.huber:
            abs_err = np.abs(td_errors)
            elementwise = np.where(abs_err < 1.0, 0.5 * td_errors * td_errors, abs_err - 0.5)
            d_loss = np.clip(td_errors, -1.0, 1.0)
            if weights is not None:
                elementwise *= weights
                d_loss *= weights
            loss = float(elementwise.sum()) / batch_size
        else:
            # Mean squared error as a dot product: one BLAS call instead of square, then mean.
            weighted = td_errors if weights is None else td_errors * weights
            loss = float(np.dot(weighted, td_errors)) / batch_size
            d_loss = 2.0 * weighted
        d_q = self._d_q_buffer(q_values)
        d_q[rows, actions] = d_loss / batch_size
        self.q.backward(cache, d_q, self.grads_w, self.grads_b)
        if self.max_grad_norm is not None:
            # As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is below 1.
            clip_coef = self.max_grad_norm / (math.sqrt(float(np.dot(self.grad, self.grad))) + 1e-6)
            if clip_coef < 1.0:
                self.grad *= clip_coef
        self.optimizer.step(self.grad)
        return loss, float(np.add.reduce(current_q)) / batch_size, td_errors

    def _rows(self, batch_size: int) -> np.ndarray:
        """``arange(batch_size)``, kept from one update to the next (the batch size rarely changes)."""
        if len(self._arange) != batch_size:
            self._arange = np.arange(batch_size)
        return self._arange

    def _d_q_buffer(self, q_values: np.ndarray) -> np.ndarray:
        """A zeroed (batch, n_actions) array for dLoss/dQ, reused from one update to the next."""
        if self._d_q is None or self._d_q.shape != q_values.shape:
            self._d_q = np.zeros_like(q_values)
        else:
            self._d_q.fill(0.0)
        return self._d_q

    def update_target(self, tau: float = 1.0) -> None:
        """Hard copy (``tau = 1``) or Polyak averaging ``target <- tau * online + (1 - tau) * target``."""
        if tau >= 1.0:
            np.copyto(self.target_params, self.params)
        else:
            self.target_params *= 1.0 - tau
            np.multiply(self.params, tau, out=self._tmp)
            self.target_params += self._tmp

    def optimizer_state(self) -> dict[str, object]:
        """State of the optimizer for checkpoints."""
        return {"kind": "numpy-adam", **self.optimizer.state_dict()}

    def load_optimizer_state(self, state: dict[str, object]) -> None:
        """Restore the optimizer state from a checkpoint."""
        self.optimizer.load_state_dict(state)
