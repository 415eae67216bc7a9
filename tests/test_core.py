"""The DQN core against autograd: one agent (N = 1, through ``CoreLearner``) and each agent of a batched
step (N = 4) make the updates that :class:`TorchLearner` (autograd, ``torch.optim.Adam``) makes, for every
option; the core's state and the single agent's optimizer checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from qiter.buffers.replay import ReplayBuffer, ReplayBufferSamples
from qiter.core.arrays import NumpyOps, Ops, TorchOps
from qiter.core.conv import ConvSpec
from qiter.core.dqn import AgentSettings, BatchedDQN
from qiter.core.mlp import MLPSpec
from qiter.dqn.core_learner import CoreLearner, network_spec, numpy_actor, supports_core
from qiter.dqn.learner import TDSettings
from qiter.dqn.networks import ConvQNetwork, QNetwork, make_q_network
from qiter.dqn.torch_learner import TorchLearner
from qiter.dqn.tutorial import dqn_update
from qiter.errors import QiterError

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


def activation_of(options: dict[str, bool]) -> str:
    for name in ("elu", "gelu", "tanh"):
        if options.get(name):
            return name
    return "relu"


def make_net(options: dict[str, bool], hidden: int = 16) -> QNetwork:
    return make_q_network(
        OBS_SPACE, ACTION_SPACE, hidden, 2, activation_of(options), dueling=options["dueling"],
        layer_norm=options.get("layer_norm", False),
    )  # fmt: skip


def td_settings(options: dict[str, bool], lr: float = LR, gamma: float = GAMMA) -> TDSettings:
    return TDSettings(
        lr, gamma, options["double_dqn"], "huber" if options["huber"] else "mse",
        0.5 if options["grad_clip"] else None,
    )  # fmt: skip


def make_pair(
    options: dict[str, bool], seed: int = 0
) -> tuple[CoreLearner, TorchLearner, list[QNetwork], list[QNetwork]]:
    """Two learners on networks with the same initial weights."""
    th.manual_seed(seed)
    net = make_net(options)
    # The target starts different from the online net, so Double DQN's choice matters.
    target = make_net(options)
    for module in (net, target):
        randomize_layer_norms(module)
    nets = [copy.deepcopy(net), copy.deepcopy(net)]
    targets = [copy.deepcopy(target), copy.deepcopy(target)]
    settings = td_settings(options)
    return (
        CoreLearner(nets[0], targets[0], settings),
        TorchLearner(nets[1], targets[1], settings),
        nets,
        targets,
    )


def randomize_layer_norms(module: th.nn.Module) -> None:
    """Move LayerNorm scales and shifts away from their initial 1 and 0, so that the comparisons see them."""
    with th.no_grad():
        for m in module.modules():
            if isinstance(m, th.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def assert_same_parameters(a: th.nn.Module, b: th.nn.Module, atol: float = 1e-5) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), atol=atol, rtol=0)


def options_with(*names: str, layer_norm: bool = False) -> dict[str, bool]:
    return {**dict.fromkeys(OPTIONS, False), **dict.fromkeys(names, True), "layer_norm": layer_norm}


def name_of(options: dict[str, bool]) -> str:
    return "-".join(k for k, v in options.items() if v) or "plain"


# -- one agent (N = 1) against autograd ---------------------------------------------------------------

COMBINATIONS = [
    dict(zip(OPTIONS, values)) for values in itertools.product([False, True], repeat=len(OPTIONS))
]
# Not the whole product again for layer norm and the other activations (it would double the suite): each
# plain and dueling, and the options that touch the gradient path (Double DQN, huber, clipping, n-step,
# importance weights) together.
GRADIENT_PATH = ("double_dqn", "huber", "grad_clip", "n_step", "per_weights")
MORE_COMBINATIONS = [
    options_with(layer_norm=True),
    options_with("tanh", layer_norm=True),
    options_with("dueling", layer_norm=True),
    options_with("dueling", "tanh", layer_norm=True),
    options_with("double_dqn", "huber", "grad_clip", layer_norm=True),
    options_with("double_dqn", "huber", "grad_clip", "tanh", layer_norm=True),
    options_with("dueling", *GRADIENT_PATH, layer_norm=True),
    options_with("dueling", "double_dqn", "n_step", "per_weights", "tanh", layer_norm=True),
] + [
    options_with(activation, *names, layer_norm=layer_norm)
    for activation in ("elu", "gelu")
    for names, layer_norm in [((), False), (("dueling",), True), (GRADIENT_PATH, False), (("dueling", *GRADIENT_PATH), True)]
]  # fmt: skip


@pytest.mark.parametrize("options", COMBINATIONS, ids=name_of)
def test_core_matches_torch_learner(options: dict[str, bool]) -> None:
    check_core_matches_torch_learner(options)


@pytest.mark.parametrize("options", MORE_COMBINATIONS, ids=name_of)
def test_core_matches_torch_learner_with_layer_norm_elu_gelu(options: dict[str, bool]) -> None:
    check_core_matches_torch_learner(options)


def check_core_matches_torch_learner(options: dict[str, bool]) -> None:
    core, torch_learner, nets, targets = make_pair(options)
    rng = np.random.default_rng(1)
    for step in range(6):
        samples = random_batch(rng, options["n_step"], options["per_weights"])
        loss_np, q_np, max_q_np, td_np = core.update(samples)
        loss_th, q_th, max_q_th, td_th = torch_learner.update(samples)
        assert loss_np == pytest.approx(loss_th, rel=1e-5, abs=1e-6)
        assert q_np == pytest.approx(q_th, rel=1e-5, abs=1e-6)
        assert max_q_np == pytest.approx(max_q_th, rel=1e-5, abs=1e-6)
        assert max_q_np >= q_np
        np.testing.assert_allclose(td_np, td_th, rtol=1e-5, atol=1e-5)
        # The torch module is a view of the core's vector: it sees every update.
        assert_same_parameters(nets[0], nets[1])
        if step == 2:
            # A hard target update halfway through: the targets must stay equal too.
            core.update_target()
            torch_learner.update_target()
            assert_same_parameters(targets[0], targets[1])
            assert_same_parameters(targets[0], nets[0])


@pytest.mark.parametrize("dueling", [False, True], ids=["plain", "dueling"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "gelu"])
def test_act_and_greedy_match_torch(activation: str, dueling: bool) -> None:
    th.manual_seed(3)
    net = make_q_network(OBS_SPACE, ACTION_SPACE, 16, 2, activation, dueling=dueling, layer_norm=True)
    randomize_layer_norms(net)
    assert supports_core(net)
    # Spread-out inputs, so that the layer norm's statistics differ a lot from row to row.
    obs = np.random.default_rng(4).normal(scale=3.0, size=(200, OBS_DIM)).astype(np.float32)
    with th.no_grad():
        q_torch = net(th.from_numpy(obs)).numpy()
    expected = q_torch.argmax(axis=1)
    actor = numpy_actor(net)  # views of the module's own weights (the torch learner's acting path)
    assert actor is not None and [actor(o) for o in obs] == expected.tolist()
    learner = CoreLearner(net, copy.deepcopy(net), TDSettings(LR, GAMMA))
    np.testing.assert_allclose(learner.core.q_values(obs[None])[0], q_torch, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(learner.greedy(obs), expected)
    assert [learner.act(o) for o in obs] == expected.tolist()
    with th.no_grad():  # still the module's output after the core took its weights over
        np.testing.assert_allclose(net(th.from_numpy(obs)).numpy(), q_torch, rtol=1e-6, atol=1e-6)


def test_supported_layouts() -> None:
    for activation, dueling, layer_norm in itertools.product(
        ["relu", "tanh", "elu", "gelu"], [False, True], [False, True]
    ):
        net = make_q_network(
            OBS_SPACE, ACTION_SPACE, 8, 2, activation, dueling=dueling, layer_norm=layer_norm
        )
        spec = network_spec(net)
        assert spec == MLPSpec((OBS_DIM, 8, 8, N_ACTIONS + dueling), activation, layer_norm, dueling)
    assert supports_core(make_q_network(OBS_SPACE, ACTION_SPACE, 8, 0, layer_norm=True))
    # Variants the core's backward pass is not written for stay on the torch path.
    refused = []
    for replace in (th.nn.LayerNorm(8, elementwise_affine=False), th.nn.ELU(alpha=0.5), th.nn.GELU("tanh")):
        net = make_q_network(OBS_SPACE, ACTION_SPACE, 8, 2, layer_norm=isinstance(replace, th.nn.LayerNorm))
        net.q_net[1] = replace
        refused.append(supports_core(net))
    assert refused == [False, False, False]
    with pytest.raises(ValueError, match="cannot run this network"):
        CoreLearner(net, copy.deepcopy(net), TDSettings(LR, GAMMA))


def test_polyak_update() -> None:
    core, torch_learner, nets, targets = make_pair(options_with())
    before = [p.detach().clone() for p in targets[0].parameters()]
    tau = 0.05
    core.update_target(tau)
    torch_learner.update_target(tau)
    for p_old, p_new, p_online in zip(before, targets[0].parameters(), nets[0].parameters()):
        # target <- tau * online + (1 - tau) * target
        np.testing.assert_allclose(
            p_new.detach().numpy(), (tau * p_online + (1 - tau) * p_old).detach().numpy(), atol=1e-7
        )
    assert_same_parameters(targets[0], targets[1], atol=1e-7)


def test_seed_dqn_update_matches_torch_learner() -> None:
    _, torch_learner, nets, targets = make_pair(options_with())
    seed_net, seed_target = copy.deepcopy(nets[1]), copy.deepcopy(targets[1])
    # Two identical buffers with the same sampling stream: both updates see the same minibatches.
    buffers = [ReplayBuffer(100, OBS_SPACE, ACTION_SPACE, rng=np.random.default_rng(5)) for _ in range(2)]
    data_rng = np.random.default_rng(6)
    for _ in range(100):
        obs, next_obs = data_rng.normal(size=(2, OBS_DIM)).astype(np.float32)
        transition = (
            obs, next_obs, int(data_rng.integers(N_ACTIONS)), float(data_rng.normal()),
            bool(data_rng.random() < 0.1),
        )  # fmt: skip
        for buffer in buffers:
            buffer.store_transition(*transition)
    optimizer = th.optim.Adam(seed_net.parameters(), lr=LR)
    for _ in range(5):
        dqn_update(seed_net, seed_target, optimizer, buffers[0], BATCH, GAMMA)
        torch_learner.update(buffers[1].sample(BATCH))
    assert_same_parameters(seed_net, nets[1], atol=1e-6)


# -- the single agent's optimizer checkpoints ---------------------------------------------------------


def test_optimizer_state_keeps_the_numpy_adam_layout() -> None:
    """The moments are saved flat in the order and shapes of the network's parameters (the layout of
    every ``qiter-dqn-v2`` checkpoint), whatever the core's own layout: they equal torch Adam's."""
    options = options_with("dueling", layer_norm=True)
    core, torch_learner, _, _ = make_pair(options)
    rng = np.random.default_rng(2)
    for _ in range(3):
        samples = random_batch(rng, False, False)
        core.update(samples)
        torch_learner.update(samples)
    state = core.optimizer_state()
    assert state["kind"] == "numpy-adam" and state["step"] == 3
    torch_state = [torch_learner.optimizer.state[p] for p in torch_learner.q_net.parameters()]
    for key in ("exp_avg", "exp_avg_sq"):
        expected = th.cat([s[key].reshape(-1) for s in torch_state]).numpy()
        saved = state[key]
        assert isinstance(saved, th.Tensor)
        np.testing.assert_allclose(saved.numpy(), expected, rtol=1e-4, atol=1e-9)
    # A round trip through torch.save / torch.load(weights_only=True) continues the same run.
    buffer = io.BytesIO()
    th.save(state, buffer)
    buffer.seek(0)
    other, _, _, _ = make_pair(options)
    np.copyto(other.core.params, core.core.params)
    np.copyto(other.core.target_params, core.core.target_params)
    other.load_optimizer_state(th.load(buffer, weights_only=True))
    samples = random_batch(rng, False, False)
    core.update(samples)
    other.update(samples)
    np.testing.assert_array_equal(other.core.params, core.core.params)
    with pytest.raises(QiterError, match="backend torch"):
        other.load_optimizer_state(torch_learner.optimizer_state())


# -- N agents: each agent's slice is a single agent's step ---------------------------------------------

N = 4
AGENT_LR = [1e-3, 3e-4, 1e-2, 3e-3]
AGENT_GAMMA = [0.99, 0.9, 0.5, 0.95]
AGENT_DOUBLE = [False, True, True, False]
AGENT_HUBER = [False, True, False, True]
AGENT_CLIP = [None, 0.5, 2.0, None]
ARCHITECTURES = [
    options_with(),
    options_with("tanh", "dueling", layer_norm=True),
    options_with("elu", layer_norm=True),
    options_with("gelu", "dueling"),
]


def agent_options(i: int, architecture: dict[str, bool]) -> dict[str, bool]:
    return {**architecture, "double_dqn": AGENT_DOUBLE[i], "huber": AGENT_HUBER[i], "grad_clip": False}


def single_learners(architecture: dict[str, bool]) -> list[TorchLearner]:
    learners = []
    for i in range(N):
        th.manual_seed(10 + i)
        net, target = make_net(architecture), make_net(architecture)
        randomize_layer_norms(net)
        randomize_layer_norms(target)
        settings = TDSettings(
            AGENT_LR[i], AGENT_GAMMA[i], AGENT_DOUBLE[i], "huber" if AGENT_HUBER[i] else "mse", AGENT_CLIP[i]
        )
        learners.append(TorchLearner(net, target, settings))
    return learners


def load_agents(core: BatchedDQN, ops: Ops, learners: list[TorchLearner]) -> None:
    """Agent i of the core starts from learner i's online and target weights."""
    for i, learner in enumerate(learners):
        for views, module in ((core.online, learner.q_net), (core.target, learner.q_target_net)):
            for view, p in zip(views.tensors, module.parameters(), strict=True):
                data = p.detach().numpy()
                ops.copy_into(
                    view[i], ops.asarray((data.T if data.ndim == 2 else data).reshape(view.shape[1:]))
                )


def agent_parameters(core: BatchedDQN, ops: Ops, i: int, target: bool = False) -> list[np.ndarray]:
    views = core.target if target else core.online
    return [ops.to_numpy(v[i]).copy() for v in views.tensors]


def torch_parameters(module: th.nn.Module, spec: MLPSpec) -> list[np.ndarray]:
    out = []
    for p, shape in zip(module.parameters(), spec.tensor_shapes()):
        data = p.detach().numpy()
        out.append(
            (data.T if data.ndim == 2 else data).reshape(
                (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
            )
        )
    return out


@pytest.mark.parametrize("ops", [NumpyOps(), TorchOps("cpu")], ids=lambda o: o.name)
@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=name_of)
def test_each_agent_of_a_batched_step_is_a_single_agents_step(
    architecture: dict[str, bool], ops: Ops
) -> None:
    """Four agents with their own learning rate, gamma, Double DQN, loss and clipping, on n-step batches
    with importance weights, 8 updates, a masked hard target copy and a Polyak average: every agent's
    loss, Q statistics, TD errors and weights equal those of a TorchLearner with its settings."""
    learners = single_learners(architecture)
    spec = network_spec(learners[0].q_net)
    assert spec is not None
    settings = AgentSettings.make(
        N, AGENT_LR, AGENT_GAMMA, AGENT_DOUBLE, AGENT_HUBER, [np.inf if c is None else c for c in AGENT_CLIP]
    )
    core = BatchedDQN(ops, N, spec, settings)
    load_agents(core, ops, learners)
    rng = np.random.default_rng(0)
    for k in range(8):
        batches = [random_batch(rng, True, True) for _ in range(N)]
        stacked = [
            np.stack([getattr(b, f) for b in batches])
            for f in (
                "observations",
                "actions",
                "rewards",
                "next_observations",
                "terminateds",
                "discounts",
                "weights",
            )
        ]
        dtypes = ["float32", "int64", "float32", "float32", "bool", "float32", "float32"]
        stacked[1] = stacked[1][..., 0]
        out = core.update(*(ops.asarray(x, d) for x, d in zip(stacked, dtypes)))
        for i, (learner, batch) in enumerate(zip(learners, batches)):
            result = learner.update(batch)
            assert ops.to_numpy(out.loss)[i] == pytest.approx(result.loss, rel=1e-4, abs=1e-6)
            assert ops.to_numpy(out.mean_q)[i] == pytest.approx(result.mean_q, rel=1e-4, abs=1e-5)
            assert ops.to_numpy(out.max_q)[i] == pytest.approx(result.max_q, rel=1e-4, abs=1e-5)
            np.testing.assert_allclose(ops.to_numpy(out.td_errors)[i], result.td_errors, rtol=1e-4, atol=1e-4)
        if k == 3:  # a hard copy for agents 0 and 2 only
            core.update_target(ops.asarray([True, False, True, False], "bool"))
            for i in (0, 2):
                learners[i].update_target()
        if k == 5:
            core.update_target(tau=0.1)
            for learner in learners:
                learner.update_target(0.1)
    for i, learner in enumerate(learners):
        for ours, theirs in zip(
            agent_parameters(core, ops, i), torch_parameters(learner.q_net, spec), strict=True
        ):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
        for ours, theirs in zip(
            agent_parameters(core, ops, i, target=True),
            torch_parameters(learner.q_target_net, spec),
            strict=True,
        ):
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_target_mask_copies_only_the_due_agents() -> None:
    ops = NumpyOps()
    core = BatchedDQN(ops, 2, MLPSpec((OBS_DIM, 8, N_ACTIONS)), AgentSettings.make(2, 1e-3, 0.99))
    core.initialize(lambda k, shape: np.random.default_rng(k).random((2, *shape), dtype=np.float32))
    core.params += 1.0
    core.update_target(np.array([True, False]))
    assert np.array_equal(core.target.weights[0][0], core.online.weights[0][0])
    assert not np.array_equal(core.target.weights[0][1], core.online.weights[0][1])


def test_initialize_uses_each_agents_draws_and_torch_bounds() -> None:
    spec = MLPSpec((OBS_DIM, 16, N_ACTIONS + 1), "relu", layer_norm=True, dueling=True)
    core = BatchedDQN(NumpyOps(), 3, spec, AgentSettings.make(3, 1e-3, 0.99))
    core.initialize(lambda k, shape: np.random.default_rng(k).random((3, *shape), dtype=np.float32))
    w0, w1 = core.online.weights
    assert np.abs(w0).max() <= 1 / np.sqrt(OBS_DIM) and np.abs(w1).max() <= 1 / np.sqrt(16)
    np.testing.assert_array_equal(core.online.norm_weights[0], 1.0)
    np.testing.assert_array_equal(core.online.norm_biases[0], 0.0)
    np.testing.assert_array_equal(core.target_params, core.params)


def test_learning_rates_per_agent_and_state_dict_round_trip() -> None:
    """A learning rate of 0 freezes its agent; a saved and reloaded core (torch.load(weights_only=True))
    continues exactly; another shape is refused in one line."""
    ops = NumpyOps()
    spec = MLPSpec((OBS_DIM, 8, 8, N_ACTIONS), "tanh", layer_norm=True)
    core = BatchedDQN(ops, 2, spec, AgentSettings.make(2, [1e-2, 1e-2], 0.9))
    core.initialize(lambda k, shape: np.random.default_rng(k).random((2, *shape), dtype=np.float32))
    core.set_learning_rate([1e-2, 0.0])
    frozen = agent_parameters(core, ops, 1)
    rng = np.random.default_rng(3)

    def batch() -> list[np.ndarray]:
        return [
            rng.normal(size=(2, BATCH, OBS_DIM)).astype(np.float32), rng.integers(0, N_ACTIONS, (2, BATCH)),
            rng.normal(size=(2, BATCH)).astype(np.float32), rng.normal(size=(2, BATCH, OBS_DIM)).astype(np.float32),
            rng.random((2, BATCH)) < 0.2,
        ]  # fmt: skip

    for _ in range(3):
        core.update(*batch())
    for a, b in zip(agent_parameters(core, ops, 1), frozen):
        np.testing.assert_array_equal(a, b)
    buffer = io.BytesIO()
    th.save(core.state_dict(), buffer)
    buffer.seek(0)
    restored = BatchedDQN(ops, 2, spec, AgentSettings.make(2, 1.0, 0.9))
    restored.load_state_dict(th.load(buffer, weights_only=True))
    assert restored.step_count == 3 and list(restored.learning_rate) == [1e-2, 0.0]
    data = batch()
    core.update(*data)
    restored.update(*data)
    np.testing.assert_array_equal(restored.params, core.params)
    np.testing.assert_array_equal(restored.adam.exp_avg_sq, core.adam.exp_avg_sq)
    wider = BatchedDQN(
        ops, 2, MLPSpec((OBS_DIM, 16, 8, N_ACTIONS), "tanh", layer_norm=True), AgentSettings.make(2, 1.0, 0.9)
    )
    with pytest.raises(QiterError, match="n_params"):
        wider.load_state_dict(core.state_dict())


@pytest.mark.parametrize("size", [64, 1 << 15], ids=["numpy", "fused"])
def test_adam_flushes_subnormal_moments_and_the_parameters_do_not_see_it(
    monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Moments decaying through the subnormal range (a parameter whose gradient stays zero) are set to zero
    every few steps on numpy (with numpy's Adam, and with torch's fused kernel for large vectors); the
    parameters end bit for bit where they end without the flush."""
    from qiter.core import adam as adam_module
    from qiter.core.adam import FUSED_MIN_SIZE, Adam

    rng = np.random.default_rng(0)
    params = rng.normal(size=size).astype(np.float32)
    half = size // 2
    grads = [
        np.where(np.arange(size) < half, rng.normal(size=size), 0.0).astype(np.float32) for _ in range(80)
    ]

    def run() -> Adam:
        grad = np.zeros(size, np.float32)
        adam = Adam(NumpyOps(), params.copy(), grad, 1e-3, 1e-8)
        assert (adam._fused is not None) == (size >= FUSED_MIN_SIZE)
        adam.step()  # then moments that will decay through the subnormal range
        adam.exp_avg[half:] = 1e-36
        adam.exp_avg_sq[half:] = 1e-40  # subnormal already: flushed at the 64th step
        for g in grads:
            grad[:] = g
            adam.step()
        return adam

    flushed = run()
    monkeypatch.setattr(adam_module, "FLUSH_INTERVAL", 10**9)
    monkeypatch.setattr(adam_module, "SECOND_MOMENT_FLUSH_INTERVAL", 10**9)
    kept = run()
    tiny = np.finfo(np.float32).tiny
    assert np.any((kept.exp_avg != 0) & (np.abs(kept.exp_avg) < tiny))
    assert not np.any((flushed.exp_avg != 0) & (np.abs(flushed.exp_avg) < tiny))
    assert np.any((kept.exp_avg_sq != 0) & (kept.exp_avg_sq < tiny))
    assert not np.any((flushed.exp_avg_sq != 0) & (flushed.exp_avg_sq < tiny))
    np.testing.assert_array_equal(flushed.params, kept.params)


# -- the MinAtar network (a convolution before the MLP) against autograd ---------------------------------

MINATAR_SPACE = spaces.Box(0, 1, (4, 10, 10), np.uint8)
PIXEL_SPACE = spaces.Box(0, 255, (2, 7, 6), np.uint8)  # 8-bit pixels: scaled by 1/255
CONV_OPTIONS = [
    options_with(),
    options_with("dueling", "double_dqn", "huber", "grad_clip"),
    options_with("n_step", "per_weights", "huber"),
    options_with("dueling", *GRADIENT_PATH),
]


def image_batch(
    rng: np.random.Generator, space: spaces.Box, n_step: bool, per_weights: bool
) -> ReplayBufferSamples:
    """Stored images (uint8, mostly zeros) as the frame buffer samples them."""
    shape = (2, BATCH, *space.shape)
    images = rng.integers(0, int(space.high.max()) + 1, size=shape) * (rng.random(shape) < 0.3)
    return dataclasses.replace(
        random_batch(rng, n_step, per_weights),
        observations=images[0].astype(np.uint8),
        next_observations=images[1].astype(np.uint8),
    )


def conv_net(space: spaces.Box, dueling: bool) -> ConvQNetwork:
    return ConvQNetwork(space, ACTION_SPACE, "minatar-cnn", dueling)


def torch_to_core(data: np.ndarray) -> np.ndarray:
    """A torch parameter in the core's layout: kernels (out, c, k, k) as (c k k, out), weights (in, out)."""
    if data.ndim == 4:
        return data.reshape(len(data), -1).T
    return data.T if data.ndim == 2 else data


@pytest.mark.parametrize("space", [MINATAR_SPACE, PIXEL_SPACE], ids=["minatar", "pixels"])
@pytest.mark.parametrize("options", CONV_OPTIONS, ids=name_of)
def test_minatar_network_on_the_core_matches_torch_learner(
    options: dict[str, bool], space: spaces.Box
) -> None:
    """uint8 images through the core's convolution: the same losses, Q statistics, TD errors and weights
    as autograd, with a hard target copy, a learning-rate change and a Polyak average on the way."""
    th.manual_seed(0)
    net, target = conv_net(space, options["dueling"]), conv_net(space, options["dueling"])
    spec = network_spec(net)
    scale = 1 / float(space.high.max())
    assert spec is not None and spec.conv == ConvSpec(space.shape[0], *space.shape[1:], 16, 3, scale)
    nets, targets = [copy.deepcopy(net), copy.deepcopy(net)], [copy.deepcopy(target), copy.deepcopy(target)]
    settings = td_settings(options)
    learners = [CoreLearner(nets[0], targets[0], settings), TorchLearner(nets[1], targets[1], settings)]
    rng = np.random.default_rng(1)
    for step in range(6):
        samples = image_batch(rng, space, options["n_step"], options["per_weights"])
        (loss, q, max_q, td), theirs = (learner.update(samples) for learner in learners)
        assert loss == pytest.approx(theirs.loss, rel=1e-5, abs=1e-6)
        assert q == pytest.approx(theirs.mean_q, rel=1e-5, abs=1e-6)
        assert max_q == pytest.approx(theirs.max_q, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(td, theirs.td_errors, rtol=1e-5, atol=1e-5)
        assert_same_parameters(nets[0], nets[1])
        if step == 2:
            for learner in learners:
                learner.update_target()
                learner.learning_rate = 3e-4
            assert_same_parameters(targets[0], targets[1])
        if step == 4:
            for learner in learners:
                learner.update_target(0.3)
            assert_same_parameters(targets[0], targets[1])
    obs = image_batch(rng, space, False, False).observations
    with th.no_grad():
        q_torch = nets[1](th.from_numpy(obs)).numpy()
    np.testing.assert_allclose(learners[0].core.q_values(obs[None])[0], q_torch, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(learners[0].greedy(obs), q_torch.argmax(1))
    assert [learners[0].act(o) for o in obs] == q_torch.argmax(1).tolist()
    actor = numpy_actor(nets[1])  # the torch learner acts through numpy views of its own weights too
    assert actor is not None and [actor(o) for o in obs] == q_torch.argmax(1).tolist()


def test_minatar_network_optimizer_state_both_ways() -> None:
    """The core's moments saved in the layout of the network's parameters equal torch Adam's; a torch
    learner's optimizer state (checkpoints made before the core ran this network) resumes on the core."""
    th.manual_seed(2)
    net, target = conv_net(MINATAR_SPACE, True), conv_net(MINATAR_SPACE, True)
    settings = TDSettings(LR, GAMMA, loss="huber")
    core = CoreLearner(copy.deepcopy(net), copy.deepcopy(target), settings)
    torch_learner = TorchLearner(copy.deepcopy(net), copy.deepcopy(target), settings)
    rng = np.random.default_rng(3)
    for _ in range(3):
        samples = image_batch(rng, MINATAR_SPACE, False, False)
        core.update(samples)
        torch_learner.update(samples)
    state = core.optimizer_state()
    torch_state = [torch_learner.optimizer.state[p] for p in torch_learner.q_net.parameters()]
    for key in ("exp_avg", "exp_avg_sq"):
        expected = th.cat([s[key].reshape(-1) for s in torch_state]).numpy()
        saved = state[key]
        assert isinstance(saved, th.Tensor)
        np.testing.assert_allclose(saved.numpy(), expected, rtol=1e-4, atol=1e-9)
    resumed = CoreLearner(
        copy.deepcopy(torch_learner.q_net), copy.deepcopy(torch_learner.q_target_net), settings
    )
    resumed.load_optimizer_state(torch_learner.optimizer_state())
    assert resumed.core.step_count == 3
    samples = image_batch(rng, MINATAR_SPACE, False, False)
    resumed.update(samples)
    torch_learner.update(samples)
    assert_same_parameters(resumed.q_net, torch_learner.q_net)
    with pytest.raises(QiterError, match="backend torch"):  # an MLP's torch state stays refused
        make_pair(options_with())[0].load_optimizer_state({"kind": "torch-adam", "state": {}})


def test_conv_layouts_the_core_refuses() -> None:
    """The Nature CNN (strides, three convolutions) and a padded convolution stay on the torch learner."""
    atari = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert not supports_core(ConvQNetwork(atari, ACTION_SPACE, "nature-cnn"))
    padded = conv_net(MINATAR_SPACE, False)
    padded.q_net[0] = th.nn.Conv2d(4, 16, 3, padding=1)
    assert network_spec(padded) is None
    assert supports_core(conv_net(MINATAR_SPACE, False))


@pytest.mark.parametrize("ops", [NumpyOps(), TorchOps("cpu")], ids=lambda o: o.name)
def test_each_agent_of_a_batched_conv_step_is_a_single_agents_step(ops: Ops) -> None:
    """Four dueling MinAtar networks with their own learning rate, gamma, Double DQN, loss and clipping in
    one batched step (n-step batches with importance weights, a Polyak average): each agent's slice makes
    the updates of a TorchLearner with its settings."""
    # A tenth of the MLP test's learning rates: among 132k parameters a few have gradients at rounding
    # level, whose sign Adam turns into a whole step of the learning rate.
    agent_lr = [lr / 10 for lr in AGENT_LR]
    learners = []
    for i in range(N):
        th.manual_seed(20 + i)
        settings = TDSettings(
            agent_lr[i], AGENT_GAMMA[i], AGENT_DOUBLE[i], "huber" if AGENT_HUBER[i] else "mse", AGENT_CLIP[i]
        )
        learners.append(TorchLearner(conv_net(MINATAR_SPACE, True), conv_net(MINATAR_SPACE, True), settings))
    spec = network_spec(learners[0].q_net)
    assert spec is not None and spec.conv is not None
    settings = AgentSettings.make(
        N, agent_lr, AGENT_GAMMA, AGENT_DOUBLE, AGENT_HUBER, [np.inf if c is None else c for c in AGENT_CLIP]
    )
    core = BatchedDQN(ops, N, spec, settings)
    for i, learner in enumerate(learners):  # agent i starts from learner i's weights
        for views, module in ((core.online, learner.q_net), (core.target, learner.q_target_net)):
            for view, p in zip(views.tensors, module.parameters(), strict=True):
                data = torch_to_core(p.detach().numpy())
                ops.copy_into(view[i], ops.asarray(data.reshape(view.shape[1:])))
    rng = np.random.default_rng(0)
    fields = (
        "observations",
        "actions",
        "rewards",
        "next_observations",
        "terminateds",
        "discounts",
        "weights",
    )
    dtypes = ["int64", "int64", "float32", "int64", "bool", "float32", "float32"]
    for k in range(4):
        batches = [image_batch(rng, MINATAR_SPACE, True, True) for _ in range(N)]
        stacked = [np.stack([getattr(b, f) for b in batches]) for f in fields]
        stacked[1] = stacked[1][..., 0]
        out = core.update(*(ops.asarray(x, d) for x, d in zip(stacked, dtypes)))
        for i, (learner, batch) in enumerate(zip(learners, batches)):
            result = learner.update(batch)
            assert ops.to_numpy(out.loss)[i] == pytest.approx(result.loss, rel=1e-4, abs=1e-6)
            np.testing.assert_allclose(ops.to_numpy(out.td_errors)[i], result.td_errors, rtol=1e-4, atol=1e-4)
        if k == 1:
            core.update_target(tau=0.1)
            for learner in learners:
                learner.update_target(0.1)
    for i, learner in enumerate(learners):
        for ours, p in zip(core.agent_tensors(i), learner.q_net.parameters(), strict=True):
            np.testing.assert_allclose(ours, torch_to_core(p.detach().numpy()), rtol=1e-4, atol=1e-5)
