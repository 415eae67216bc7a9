"""Populations: N independent DQN agents trained in lockstep by batched array operations (``docs/population.md``).

``train(config, n_agents, sweep, run_dir)`` trains them; ``save_agent`` writes one as an ordinary DQN
checkpoint. The array environments (:mod:`qiter.population.array_envs`) and the DQN core
(:mod:`qiter.core`, the single agent's learner too) run on numpy, on torch's CPU backend and on CUDA.
"""

from __future__ import annotations

from qiter.population.train import PopulationResult, save_agent, train

__all__ = ["PopulationResult", "save_agent", "train"]
