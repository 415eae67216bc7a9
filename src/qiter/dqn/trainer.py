"""``train(config, run_dir)``: a DQN run, as the generic run loop drives the DQN agent.

The algorithm lives in :mod:`qiter.dqn.agent`; the lifecycle (environments, logs, evaluation, checkpoints,
resume) in :mod:`qiter.run_loop`. This module keeps the names the rest of qiter and its users import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from qiter import run_loop
from qiter.agent import load_agent as load_trained_agent
from qiter.dqn.agent import DQNAgent, build_q_network, linear_schedule, make_learner
from qiter.dqn.config import DQNConfig
from qiter.dqn.networks import QNetwork
from qiter.errors import QiterError
from qiter.run_loop import DivergenceError, RunEvents, TrainResult

__all__ = [
    "DQNTrainResult",
    "DivergenceError",
    "TrainResult",
    "build_q_network",
    "linear_schedule",
    "load_agent",
    "make_learner",
    "train",
]


@dataclass
class DQNTrainResult(TrainResult):
    """What a DQN run returns: :class:`~qiter.run_loop.TrainResult`, with the agent's Q-network at hand."""

    @property
    def q_net(self) -> QNetwork:
        """The trained Q-network."""
        assert isinstance(self.agent, DQNAgent)
        return self.agent.q_net


class _EvaluationCallback(RunEvents):
    """The ``on_evaluation(step, mean, std, q_net)`` function of :func:`train` as a run event."""

    def __init__(self, function: Callable[[int, float, float, QNetwork], None]) -> None:
        self.function = function

    def on_evaluation(self, step: int, mean_return: float, std_return: float, agent: object) -> None:
        assert isinstance(agent, DQNAgent)
        self.function(step, mean_return, std_return, agent.q_net)


def train(
    config: DQNConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    verbose: int = 1,
    on_evaluation: Callable[[int, float, float, QNetwork], None] | None = None,
    tensorboard: bool = True,
    events: Sequence[RunEvents] = (),
    final_eval_episodes: int | None = None,
    video: bool = False,
) -> DQNTrainResult:
    """Train a DQN agent.

    :param config: All hyperparameters.
    :param run_dir: Folder for config, logs, checkpoints and evaluation results; ``None`` writes nothing.
    :param resume: Continue from the latest checkpoint in ``run_dir``.
    :param overwrite: Replace a run already in ``run_dir`` (otherwise refused).
    :param progress: Show a progress bar.
    :param verbose: 1 prints evaluations, 0 prints nothing.
    :param on_evaluation: Called after each evaluation with ``(step, mean, std, q_net)``.
    :param tensorboard: Also write TensorBoard scalars (when ``run_dir`` is set).
    :param events: Run events (see :class:`~qiter.run_loop.RunEvents`).
    :param final_eval_episodes: Episodes of the final evaluation (``eval.json``); see
        :func:`qiter.run_loop.train`.
    :param video: Record the final evaluation to ``run_dir/videos``.
    :return: The trained agent (``result.q_net`` is its network) and a summary of the run.
    """
    all_events = [*events, *([_EvaluationCallback(on_evaluation)] if on_evaluation is not None else [])]
    result = run_loop.train(
        DQNAgent, config, run_dir, resume=resume, overwrite=overwrite, progress=progress, verbose=verbose,
        tensorboard=tensorboard, events=all_events, final_eval_episodes=final_eval_episodes, video=video,
    )  # fmt: skip
    return DQNTrainResult(**{f.name: getattr(result, f.name) for f in fields(result)})


def load_agent(path: str | Path) -> tuple[DQNConfig, QNetwork]:
    """Load the config and Q-network of a DQN run (``qiter.load_agent`` is the general way).

    :param path: A ``.pt`` checkpoint, or a run folder (its latest checkpoint is used).
    :return: The run's config and its network (on the CPU, in eval mode).
    """
    trained = load_trained_agent(path)
    if not isinstance(trained.agent, DQNAgent):
        raise QiterError(f"{path} holds a {trained.algo} agent, not a DQN one")
    return trained.agent.config, trained.agent.q_net
