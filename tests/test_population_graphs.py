"""The population's CUDA-graph step: counters on the device draw the same numbers as the host's (checked on
the CPU with the torch backend), and a captured run equals the eager one (CUDA only, skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from qiter.dqn.config import DQNConfig
from qiter.population.lockstep import Population
from qiter.population.train import agent_configs
from qiter.resolve import resolve_config


def _configs(env_id: str, steps: int, n: int, *overrides: str) -> list[DQNConfig]:
    config = resolve_config(
        env_id,
        overrides=[f"n_timesteps={steps}", "evaluation_interval=0", "learning_starts=200", *overrides],
    )
    return agent_configs(config, n)


def _state(pop: Population) -> list[np.ndarray]:
    ops = pop.ops
    return [
        *(a for layer in pop.layers() for a in layer),
        ops.to_numpy(pop.buffer.table),
        ops.to_numpy(pop.learner.target_params),
        ops.to_numpy(pop.learner.adam.exp_avg_sq),
        ops.to_numpy(pop.env.state),
        ops.to_numpy(pop.observations),
        pop.take_finished(),
    ]


def _pointers(pop: Population) -> list[int]:
    """Where the arrays a step reads and writes live."""
    arrays = [
        pop.clock, pop.observations, pop.episode_returns, pop.finished_sum, pop.finished_count,
        pop.env.state, pop.env.elapsed, pop.env.draws, pop.buffer.table, pop.buffer.pos, pop.buffer.size,
        pop.buffer.samples, pop.learner.params, pop.learner.target_params, pop.learner.grad,
        pop.learner.step_count, pop.learner.adam.exp_avg, pop.learner.adam.exp_avg_sq,
    ]  # fmt: skip
    return [a.data_ptr() for a in arrays]


@pytest.mark.parametrize(
    ("env_id", "overrides"),
    [
        ("CartPole-v1", ()),
        # Acrobot: three actions; Double DQN; a buffer smaller than the run, so its position wraps.
        ("Acrobot-v1", ("double_dqn=true", "replay_buffer_size=300")),
    ],
)
def test_device_counters_draw_what_the_host_counters_draw(env_id: str, overrides: tuple[str, ...]) -> None:
    """Torch on the CPU, 700 steps of 4 agents (resets, updates, target copies): the run with every counter
    on the device (what a CUDA graph replays) ends in the same state, to the bit, as the host-counted one."""
    configs = _configs(env_id, 700, 4, *overrides)
    host = Population(configs, "torch")
    device = Population(configs, "torch")
    device.use_device_counters()
    assert host.clock is None and device.clock is not None
    pointers = _pointers(device)
    host.run(0, 400)
    device.run(0, 400)
    # A graph replays the memory it saw at its capture: nothing it reads or writes may be rebound.
    assert _pointers(device) == pointers
    first = host.take_finished(), device.take_finished()
    np.testing.assert_array_equal(*first)
    host.run(400, 700)
    device.run(400, 700)
    assert int(device.clock) == 700 and int(device.buffer.samples) == host.buffer.samples
    for a, b in zip(_state(host), _state(device), strict=True):
        np.testing.assert_array_equal(a, b)
    # Evaluation (eager, between segments) sees the same networks.
    np.testing.assert_array_equal(host.evaluate(2, 700), device.evaluate(2, 700))


@pytest.mark.skipif(not th.cuda.is_available(), reason="needs CUDA")
def test_captured_graphs_run_what_the_eager_step_runs() -> None:
    """On CUDA, 600 steps of 64 agents replayed from captured graphs end where the eager run with the same
    device counters ends."""
    configs = _configs("CartPole-v1", 600, 64, "device=cuda")
    eager = Population(configs, "torch", cuda_graphs=False)
    eager.use_device_counters()
    captured = Population(configs, "torch")
    assert captured.graphs is not None
    eager.run(0, 600)
    captured.run(0, 600)
    assert set(captured.graphs.graphs) == {"transition", "gradient_step"} and not captured.graphs.failed
    for a, b in zip(_state(eager), _state(captured), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1", "MountainCar-v0"])
def test_captured_calls_never_read_a_tensor_back(env_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a CUDA graph captures (the transition, the gradient step) reads no tensor value back to Python
    (a capture forbids it): on the CPU, every way of doing so is made to fail, and both still run."""
    configs = _configs(env_id, 700, 4, "double_dqn=true", "max_grad_norm=10")
    pop = Population(configs, "torch")
    pop.use_device_counters()
    # The GPU's schedule: draw resets at every step, never ask whether a copy finished.
    pop.env.on_host = False
    pop.run(0, 300)  # past learning_starts: the scratch arrays exist, as after a graph's warm-up calls
    assert pop.clock is not None

    def read_back(*args: object, **kwargs: object) -> None:
        raise AssertionError("a tensor value was read back to Python")

    for name in ("item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(th.Tensor, name, read_back)
    for _ in range(3):
        pop.transition(pop.clock)
        pop.gradient_step()
    monkeypatch.undo()
    assert int(pop.clock) == 303
