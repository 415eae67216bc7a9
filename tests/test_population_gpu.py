"""The population on CUDA: the same numbers as the CPU path, and a run end to end. Skipped without CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from qiter.core.arrays import NumpyOps, TorchOps
from qiter.core.dqn import AgentSettings, BatchedDQN
from qiter.core.mlp import MLPSpec
from qiter.errors import QiterError
from qiter.population.array_envs import ARRAY_ENVS, make_array_env
from qiter.population.streams import INIT, Streams
from qiter.population.train import train
from qiter.resolve import resolve_config

pytestmark = pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("env_id", list(ARRAY_ENVS))
def test_cuda_envs_step_like_numpy(env_id: str) -> None:
    cpu, gpu = NumpyOps(), TorchOps("cuda")
    ours, theirs = make_array_env(env_id, 512, cpu), make_array_env(env_id, 512, gpu)
    ours.reset()
    rng = np.random.default_rng(0)
    for _ in range(50):
        theirs.set_state(gpu.asarray(ours.state, "float64"))
        theirs.elapsed = gpu.asarray(ours.elapsed, "int64")
        if ours.n_actions is None:
            actions = rng.uniform(-2, 2, (512, 1)).astype(np.float32)
            a, b = ours.step(actions), theirs.step(gpu.asarray(actions))
        else:
            actions = rng.integers(0, ours.n_actions, 512)
            a, b = ours.step(actions), theirs.step(gpu.asarray(actions, "int64"))
        np.testing.assert_allclose(
            gpu.to_numpy(b.final_observations), a.final_observations, rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(gpu.to_numpy(b.rewards), a.rewards, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(gpu.to_numpy(b.truncateds), a.truncateds)


@pytest.mark.parametrize(
    "spec", [MLPSpec((4, 16, 16, 2)), MLPSpec((4, 16, 16, 3), "gelu", layer_norm=True, dueling=True)]
)
def test_cuda_learner_matches_numpy(spec: MLPSpec) -> None:
    settings = AgentSettings.make(
        3, [1e-3, 1e-2, 3e-4], [0.99, 0.9, 0.5], [False, True, True], [False, True, False], [np.inf, 1.0, 5.0]
    )
    cpu, gpu = NumpyOps(), TorchOps("cuda")
    a = BatchedDQN(cpu, 3, spec, settings)
    b = BatchedDQN(gpu, 3, spec, settings)
    streams = Streams(cpu, [0, 1, 2])
    a.initialize(lambda k, shape: streams.uniform(INIT, k, shape))
    gpu.copy_into(b.params, gpu.asarray(a.params))
    b.update_target()
    rng = np.random.default_rng(0)
    for _ in range(10):
        batch = (rng.normal(size=(3, 32, 4)).astype(np.float32), rng.integers(0, 2, (3, 32)),
                 rng.normal(size=(3, 32)).astype(np.float32), rng.normal(size=(3, 32, 4)).astype(np.float32),
                 rng.random((3, 32)) < 0.2)  # fmt: skip
        a.update(*batch)
        dtypes = ["float32", "int64", "float32", "float32", "bool"]
        b.update(*(gpu.asarray(x, d) for x, d in zip(batch, dtypes)))
    np.testing.assert_allclose(gpu.to_numpy(b.params), a.params, rtol=1e-4, atol=1e-5)


def test_cuda_population_trains_and_refuses_too_many_agents() -> None:
    config = resolve_config(
        "CartPole-v1", overrides=["n_timesteps=3000", "device=cuda", "evaluation_interval=1000"]
    )
    result = train(config, 64)
    assert result.backend == "torch" and np.all(np.isfinite(result.final_returns))
    assert np.mean(result.final_returns) > 20
    with pytest.raises(QiterError, match="at most"):
        train(resolve_config("CartPole-v1", overrides=["device=cuda"]), 10_000_000)
