"""DQN's hyperparameter search space for ``qiter tune``, declared next to :class:`~qiter.dqn.config.DQNConfig`.

Each entry maps a config key to an Optuna distribution (the format of :mod:`qiter.search_space`). The
ranges follow the RL Zoo's DQN space, narrowed to what a small budget can tell apart. DQN on discretized
actions draws from the same space; the number of bins stays the one asked for (``--discretize K``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qiter.search_space import SearchSpace, draw

if TYPE_CHECKING:
    import optuna

__all__ = ["SEARCH_SPACE", "search_space"]

SEARCH_SPACE: SearchSpace = {
    "learning_rate": ("log", 1e-4, 3e-3),
    "batch_size": ("choice", [32, 64, 128]),
    "gamma": ("choice", [0.98, 0.99, 0.995]),
    "target_network_update_interval": ("choice", [100, 250, 500, 1000]),
    "exploration_fraction": ("float", 0.05, 0.3),
    "exploration_final_eps": ("float", 0.01, 0.1),
    "n_hidden_units": ("choice", [64, 128, 256]),
    "double_dqn": ("choice", [False, True]),
    "n_steps": ("choice", [1, 3]),
}


def search_space(trial: optuna.Trial) -> dict[str, Any]:
    """Config values for one trial, drawn from :data:`SEARCH_SPACE`.

    :param trial: The Optuna trial that draws them.
    :return: Config key -> value.
    """
    return draw(trial, SEARCH_SPACE)
