"""The numpy fast path against autograd: same loss, TD errors and parameters on the same batches."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from qiter.buffers.replay import ReplayBuffer, ReplayBufferSamples
from qiter.dqn.fast import NumpyLearner, NumpyQFunction, supports_numpy
from qiter.dqn.learner import TDSettings
from qiter.dqn.networks import QNetwork, make_q_network
from qiter.dqn.torch_learner import TorchLearner
from qiter.dqn.tutorial import dqn_update

OBS_DIM, N_ACTIONS, BATCH, GAMMA, LR = 4, 3, 32, 0.9, 1e-3
OBS_SPACE = spaces.Box(low=-np.inf, high=np.inf, shape=(OBS_DIM,), dtype=np.float32)
ACTION_SPACE = spaces.Discrete(N_ACTIONS)
OPTIONS = ("double_dqn", "dueling", "huber", "grad_clip", "n_step", "per_weights", "tanh")


def random_batch(rng: np.random.Generator, n_step: bool, per_weights: bool) -> ReplayBufferSamples:
    return ReplayBufferSamples(
        observations=rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        next_observations=rng.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        actions=rng.integers(0, N_ACTIONS, size=(BATCH, 1)),
        # Large rewards: some TD errors fall beyond the huber threshold and gradients get clipped.
        rewards=rng.normal(scale=3.0, size=BATCH).astype(np.float32),
        terminateds=rng.random(BATCH) < 0.2,
        discounts=(GAMMA ** rng.integers(1, 4, size=BATCH)).astype(np.float32) if n_step else None,
        weights=rng.uniform(0.1, 1.0, size=BATCH).astype(np.float32) if per_weights else None,
    )


def make_pair(
    options: dict[str, bool], seed: int = 0
) -> tuple[NumpyLearner, TorchLearner, list[QNetwork], list[QNetwork]]:
    """Two learners on networks with the same initial weights."""
    th.manual_seed(seed)
    activation = "tanh" if options["tanh"] else "relu"
    layer_norm = options.get("layer_norm", False)
    net = make_q_network(
        OBS_SPACE, ACTION_SPACE, 16, 2, activation, dueling=options["dueling"], layer_norm=layer_norm
    )
    # The target starts different from the online net, so Double DQN's choice matters.
    target = make_q_network(
        OBS_SPACE, ACTION_SPACE, 16, 2, activation, dueling=options["dueling"], layer_norm=layer_norm
    )
    for module in (net, target):
        randomize_layer_norms(module)
    nets = [copy.deepcopy(net), copy.deepcopy(net)]
    targets = [copy.deepcopy(target), copy.deepcopy(target)]
    kwargs = {
        "learning_rate": LR,
        "gamma": GAMMA,
        "double_dqn": options["double_dqn"],
        "loss": "huber" if options["huber"] else "mse",
        "max_grad_norm": 0.5 if options["grad_clip"] else None,
    }
    settings = TDSettings(**kwargs)  # type: ignore[arg-type]
    numpy_learner = NumpyLearner(nets[0], targets[0], settings)
    torch_learner = TorchLearner(nets[1], targets[1], settings)
    return numpy_learner, torch_learner, nets, targets


def randomize_layer_norms(module: th.nn.Module) -> None:
    """Move LayerNorm scales and shifts away from their initial 1 and 0, so that the comparisons see them."""
    with th.no_grad():
        for m in module.modules():
            if isinstance(m, th.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def assert_same_parameters(a: th.nn.Module, b: th.nn.Module, atol: float = 1e-5) -> None:
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), atol=atol, rtol=0)


COMBINATIONS = [
    dict(zip(OPTIONS, values)) for values in itertools.product([False, True], repeat=len(OPTIONS))
]


@pytest.mark.parametrize(
    "options", COMBINATIONS, ids=lambda o: "-".join(k for k, v in o.items() if v) or "plain"
)
def test_numpy_learner_matches_torch_learner(options: dict[str, bool]) -> None:
    check_numpy_learner_matches_torch_learner(options)


def with_layer_norm(*names: str) -> dict[str, bool]:
    return {**dict.fromkeys(OPTIONS, False), **dict.fromkeys(names, True), "layer_norm": True}


# Not the whole product again (it would double the suite): each activation plain and dueling, and the
# options that touch the gradient path (Double DQN, huber, clipping, n-step, PER weights) in some of them.
LAYER_NORM_COMBINATIONS = [
    with_layer_norm(),
    with_layer_norm("tanh"),
    with_layer_norm("dueling"),
    with_layer_norm("dueling", "tanh"),
    with_layer_norm("double_dqn", "huber", "grad_clip"),
    with_layer_norm("double_dqn", "huber", "grad_clip", "tanh"),
    with_layer_norm("dueling", "double_dqn", "huber", "grad_clip", "n_step", "per_weights"),
    with_layer_norm("dueling", "double_dqn", "n_step", "per_weights", "tanh"),
]


@pytest.mark.parametrize(
    "options", LAYER_NORM_COMBINATIONS, ids=lambda o: "-".join(k for k, v in o.items() if v)
)
def test_numpy_learner_matches_torch_learner_with_layer_norm(options: dict[str, bool]) -> None:
    check_numpy_learner_matches_torch_learner(options)


def check_numpy_learner_matches_torch_learner(options: dict[str, bool]) -> None:
    th.set_num_threads(1)
    numpy_learner, torch_learner, nets, targets = make_pair(options)
    rng = np.random.default_rng(1)
    for step in range(6):
        samples = random_batch(rng, options["n_step"], options["per_weights"])
        loss_np, q_np, max_q_np, td_np = numpy_learner.update(samples)
        loss_th, q_th, max_q_th, td_th = torch_learner.update(samples)
        assert loss_np == pytest.approx(loss_th, rel=1e-5, abs=1e-6)
        assert q_np == pytest.approx(q_th, rel=1e-5, abs=1e-6)
        assert max_q_np == pytest.approx(max_q_th, rel=1e-5, abs=1e-6)
        assert max_q_np >= q_np
        np.testing.assert_allclose(td_np, td_th, rtol=1e-5, atol=1e-5)
        assert_same_parameters(nets[0], nets[1])
        if step == 2:
            # A hard target update halfway through: the targets must stay equal too.
            numpy_learner.update_target()
            torch_learner.update_target()
            assert_same_parameters(targets[0], targets[1])
            assert_same_parameters(targets[0], nets[0])


@pytest.mark.parametrize("dueling", [False, True], ids=["plain", "dueling"])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_layer_norm_act_and_greedy_match_torch(activation: str, dueling: bool) -> None:
    th.manual_seed(3)
    net = make_q_network(OBS_SPACE, ACTION_SPACE, 16, 2, activation, dueling=dueling, layer_norm=True)
    randomize_layer_norms(net)
    assert supports_numpy(net)
    q = NumpyQFunction(net)
    # Spread-out inputs, so that the layer norm's statistics differ a lot from row to row.
    obs = np.random.default_rng(4).normal(scale=3.0, size=(200, OBS_DIM)).astype(np.float32)
    with th.no_grad():
        q_torch = net(th.from_numpy(obs)).numpy()
    np.testing.assert_allclose(q.forward(obs), q_torch, rtol=1e-5, atol=1e-5)
    expected = q_torch.argmax(axis=1)
    np.testing.assert_array_equal(q.greedy(obs), expected)
    assert [q.act(o) for o in obs] == expected.tolist()


def test_supports_numpy_layouts() -> None:
    for activation in ("relu", "tanh"):
        for dueling in (False, True):
            net = make_q_network(OBS_SPACE, ACTION_SPACE, 8, 2, activation, dueling=dueling, layer_norm=True)
            assert supports_numpy(net)
    assert supports_numpy(make_q_network(OBS_SPACE, ACTION_SPACE, 8, 0, layer_norm=True))
    # Activations the numpy path lacks, with or without layer norm, stay on the torch path.
    assert not supports_numpy(make_q_network(OBS_SPACE, ACTION_SPACE, 8, 2, "elu", layer_norm=True))
    assert not supports_numpy(make_q_network(OBS_SPACE, ACTION_SPACE, 8, 2, "gelu"))
    # A layer norm without its affine parameters is not what the backward pass is written for.
    net = make_q_network(OBS_SPACE, ACTION_SPACE, 8, 2, layer_norm=True)
    net.q_net[1] = th.nn.LayerNorm(8, elementwise_affine=False)
    assert not supports_numpy(net)
    with pytest.raises(ValueError, match="cannot run this network"):
        NumpyQFunction(net)


def test_polyak_update() -> None:
    options = dict.fromkeys(OPTIONS, False)
    numpy_learner, torch_learner, nets, targets = make_pair(options)
    before = [p.detach().clone() for p in targets[0].parameters()]
    tau = 0.05
    numpy_learner.update_target(tau)
    torch_learner.update_target(tau)
    for p_old, p_new, p_online in zip(before, targets[0].parameters(), nets[0].parameters()):
        # target <- tau * online + (1 - tau) * target
        np.testing.assert_allclose(
            p_new.detach().numpy(), (tau * p_online + (1 - tau) * p_old).detach().numpy(), atol=1e-7
        )
    assert_same_parameters(targets[0], targets[1], atol=1e-7)


def test_seed_dqn_update_matches_torch_learner() -> None:
    th.set_num_threads(1)
    options = dict.fromkeys(OPTIONS, False)
    _, torch_learner, nets, targets = make_pair(options)
    seed_net, seed_target = copy.deepcopy(nets[1]), copy.deepcopy(targets[1])
    # Two identical buffers with the same sampling stream: both updates see the same minibatches.
    buffers = [ReplayBuffer(100, OBS_SPACE, ACTION_SPACE, rng=np.random.default_rng(5)) for _ in range(2)]
    data_rng = np.random.default_rng(6)
    for _ in range(100):
        obs, next_obs = data_rng.normal(size=(2, OBS_DIM)).astype(np.float32)
        transition = (
            obs,
            next_obs,
            int(data_rng.integers(N_ACTIONS)),
            float(data_rng.normal()),
            bool(data_rng.random() < 0.1),
        )
        for buffer in buffers:
            buffer.store_transition(*transition)
    optimizer = th.optim.Adam(seed_net.parameters(), lr=LR)
    for _ in range(5):
        dqn_update(seed_net, seed_target, optimizer, buffers[0], BATCH, GAMMA)
        torch_learner.update(buffers[1].sample(BATCH))
    assert_same_parameters(seed_net, nets[1], atol=1e-6)
