"""Q-learning with continuous actions: the tutorial's three answers to max_a Q(s, a), side by side.

- sampled max refined by the cross-entropy method (:mod:`qiter.continuous.sampled_max`, ``cem``);
- a Q-function quadratic in the action, whose max is exact (:mod:`qiter.continuous.naf`, ``naf``);
- a learned maximizer (:mod:`qiter.continuous.ddpg`: ``ddpg`` and ``td3``);

plus DQN on discretized actions (:mod:`qiter.continuous.discretized`, ``dqn-discretized``). Every one is an
agent of the shared run loop (:func:`qiter.run_loop.train`). Modules are imported when used, so importing
this package stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CONTINUOUS_ALGORITHMS", "train"]

#: The algorithms for continuous actions (keys of :data:`qiter.agent.ALGORITHMS`).
CONTINUOUS_ALGORITHMS = ("td3", "ddpg", "naf", "cem")


def train(algo: str, config: Any, run_dir: str | Path | None = None, **kwargs: Any) -> Any:
    """Train ``algo`` (``"td3"``, ``"ddpg"``, ``"naf"``, ``"cem"``, ``"dqn-discretized"``) with ``config``.

    :param algo: The algorithm's name.
    :param config: An instance of its config class (``agent_class(algo).config_class``).
    :param run_dir: The run folder (``None``: nothing written).
    :param kwargs: Passed on to :func:`qiter.run_loop.train`.
    :return: The :class:`~qiter.run_loop.TrainResult`.
    """
    from qiter.agent import agent_class
    from qiter.run_loop import train as run_train

    return run_train(agent_class(algo), config, run_dir, **kwargs)
