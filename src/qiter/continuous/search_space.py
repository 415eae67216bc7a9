"""The continuous-action agents' search spaces for ``qiter tune``, declared next to their configs
(:mod:`qiter.continuous.config`, in the format of :mod:`qiter.search_space`).

TD3 and DDPG follow the RL Zoo's spaces (``rl_zoo3/hyperparams_opt.py``, ``sample_td3_params`` and
``sample_ddpg_params``, one space for both), in qiter's names:

- ``gamma``: the Zoo's choices (0.9 to 0.9999), without 0.9999, whose horizon no short budget reaches;
- ``learning_rate``: log-uniform; the Zoo's 1e-5 to 1, cut at 1e-2, above which Adam on these networks
  only diverges;
- ``batch_size``: the Zoo's 16 to 2048, from 64 to 512 (what a few thousand transitions can fill);
- ``replay_buffer_size`` (the Zoo's ``buffer_size``): 1e4, 1e5, 1e6;
- ``tau``: the Zoo's choices, 0.001 to 0.08;
- ``update_interval`` (the Zoo's ``train_freq``): 1 to 512 steps, with ``gradient_steps: -1``, as many
  gradient steps as environment steps since the last update (the Zoo's ``gradient_steps = train_freq``);
- ``exploration_noise`` (the Zoo's ``noise_type``): normal, Ornstein-Uhlenbeck or none;
  ``exploration_noise_std`` (``noise_std``): uniform in [0, 1], in the [-1, 1] action range as in SB3;
- ``hidden_sizes`` (``net_arch``): small 64,64, medium 256,256, big 400,300.

NAF and CEM have no Zoo space: they draw the same shared keys (their networks are two equal layers), and
CEM also its search (samples, refinement rounds) and its number of critics.
"""

from __future__ import annotations

from qiter.search_space import SearchSpace

__all__ = ["CEM_SEARCH_SPACE", "DDPG_SEARCH_SPACE", "NAF_SEARCH_SPACE", "TD3_SEARCH_SPACE"]

# What every continuous agent shares: buffer, update schedule, optimizer, targets, noise.
_SHARED: SearchSpace = {
    "gamma": ("choice", [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]),
    "learning_rate": ("log", 1e-5, 1e-2),
    "batch_size": ("choice", [64, 100, 128, 256, 512]),
    "replay_buffer_size": ("choice", [10_000, 100_000, 1_000_000]),
    "tau": ("choice", [0.001, 0.005, 0.01, 0.02, 0.05, 0.08]),
    "update_interval": ("choice", [1, 4, 8, 16, 32, 64, 128, 256, 512]),
    "gradient_steps": ("fixed", -1),
    "exploration_noise": ("choice", ["ornstein-uhlenbeck", "normal", "none"]),
    "exploration_noise_std": ("float", 0.0, 1.0),
}

TD3_SEARCH_SPACE: SearchSpace = {**_SHARED, "hidden_sizes": ("choice", ["64,64", "256,256", "400,300"])}
DDPG_SEARCH_SPACE: SearchSpace = TD3_SEARCH_SPACE
NAF_SEARCH_SPACE: SearchSpace = {**_SHARED, "hidden_sizes": ("choice", ["64,64", "128,128", "256,256"])}
CEM_SEARCH_SPACE: SearchSpace = {
    **NAF_SEARCH_SPACE,
    "cem_samples": ("choice", [32, 64, 128]),
    "cem_iterations": ("choice", [0, 1, 2, 3]),
    "n_critics": ("choice", [1, 2]),
}
