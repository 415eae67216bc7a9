"""Classic-control environments as arrays: a batch of copies stepped by a handful of array operations.

Each class holds the state of ``n`` copies, shape ``(n, state_dim)``, in float64 as gymnasium does, and
steps all of them at once with gymnasium's dynamics, rewards, termination tests, time limits and initial
distributions (``tests/test_array_envs.py`` checks them transition by transition against gymnasium).
Finished copies reset in the same step (``step`` returns both the final observation, for the replay
buffer, and the next episode's first one, for acting); ``terminated`` (a terminal state) and
``truncated`` (the time limit, as gymnasium's ``TimeLimit``: set whenever the step count reaches the limit)
are kept apart.

Random draws: one stream per copy (:class:`~qiter.population.streams.Streams`, a population gives copy
``i`` agent ``i``'s stream), counted by the env's own step counter, so copy ``i``'s episodes do not depend
on the other copies. On a GPU each step draws a fresh initial state for every copy and keeps it only where
the copy finished (asking whether any did would make the host wait for the device); on the CPU the draw is
skipped when no copy finished. The counter advances either way, so both make the same episodes.
"""

from __future__ import annotations

import math
from typing import ClassVar, NamedTuple

import torch as th

from qiter.core.arrays import Array, Ops
from qiter.errors import QiterError
from qiter.population.streams import RESET, Streams


class ArrayStep(NamedTuple):
    """What :meth:`ArrayEnv.step` returns for ``n`` copies."""

    final_observations: Array  # (n, obs_dim) float32: the step's observation, before any reset
    rewards: Array  # (n,) float64
    terminateds: Array  # (n,) bool
    truncateds: Array  # (n,) bool
    observations: Array  # (n, obs_dim) float32: the observation to act on next (reset where done)


class ArrayEnv:
    """``n`` copies of one environment.

    :param n: Number of copies.
    :param ops: The array backend (numpy, or torch on a device).
    :param streams: One random stream per copy (default: streams seeded ``0 .. n - 1``).
    """

    env_id: ClassVar[str] = ""
    obs_dim: ClassVar[int] = 0
    state_dim: ClassVar[int] = 0
    n_actions: ClassVar[int | None] = None  # None: a Box action space (Pendulum)
    max_episode_steps: ClassVar[int] = 0

    def __init__(self, n: int, ops: Ops, streams: Streams | None = None) -> None:
        self.n = n
        self.ops = ops
        self.streams = Streams(ops, range(n)) if streams is None else streams
        assert self.streams.n == n, f"{self.streams.n} random streams for {n} copies"
        self.draws: int | Array = 0  # resets and steps so far: the counter of the streams
        self.on_host = th.device(ops.device).type == "cpu"
        self._bounds: dict[tuple[tuple[float, ...], tuple[float, ...]], tuple[Array, Array]] = {}
        self.state = ops.zeros((n, self.state_dim), "float64")
        self.elapsed = ops.zeros((n,), "int64")

    # Each environment defines these three.
    def initial_states(self) -> Array:
        """A draw from the initial-state distribution for every copy, shape ``(n, state_dim)`` float64."""
        raise NotImplementedError

    def dynamics(self, state: Array, actions: Array) -> tuple[Array, Array, Array]:
        """One step of every copy: ``(next_state, reward (float64), terminated (bool))``."""
        raise NotImplementedError

    def observe(self, state: Array) -> Array:
        """Observations (float32) of the states."""
        raise NotImplementedError

    def use_device_counter(self) -> None:
        """Count draws in a 0-d tensor on the device, as a captured CUDA graph needs (torch backend only)."""
        self.draws = self.ops.asarray(self.draws, "int64")

    # The state arrays are updated in place, never rebound: a captured CUDA graph reads and writes the
    # memory it saw when it was captured.
    def reset(self) -> Array:
        """Reset every copy; return the first observations, shape ``(n, obs_dim)``."""
        self.draws += 1
        self.ops.copy_into(self.state, self.initial_states())
        self.elapsed *= 0
        return self.observe(self.state)

    def set_state(self, state: Array) -> None:
        """Put every copy in ``state`` (shape ``(n, state_dim)``), as a test does to compare with gymnasium."""
        self.ops.copy_into(self.state, self.ops.astype(state, "float64"))

    def step(self, actions: Array) -> ArrayStep:
        """Step every copy with ``actions`` ((n,) integers, or (n, 1) floats for Pendulum); reset the finished."""
        ops = self.ops
        state, rewards, terminateds = self.dynamics(self.state, actions)
        self.elapsed += 1
        truncateds = self.elapsed >= self.max_episode_steps
        done = terminateds | truncateds
        final_observations = self.observe(state)
        self.draws += 1
        if self.on_host and not done.any():
            ops.copy_into(self.state, state)
        else:
            ops.copy_into(self.state, ops.where(done[:, None], self.initial_states(), state))
            ops.copy_into(self.elapsed, ops.where(done, self.elapsed * 0, self.elapsed))
        return ArrayStep(final_observations, rewards, terminateds, truncateds, self.observe(self.state))

    def _uniform(self, low: list[float], high: list[float]) -> Array:
        """Per-column uniform draws in ``[low, high)`` for every copy, as ``np_random.uniform(low, high)``."""
        bounds = self._bounds.get((tuple(low), tuple(high)))
        if bounds is None:  # made once: a copy to a GPU on every step would wait for it
            bounds = self._bounds[(tuple(low), tuple(high))] = (
                self.ops.asarray(low, "float64"),
                self.ops.asarray(high, "float64"),
            )
        lo, hi = bounds
        return lo + (hi - lo) * self.streams.per_step(RESET, self.draws, (len(low),), "float64")


class CartPole(ArrayEnv):
    """``CartPole-v1``: Barto, Sutton and Anderson (1983)'s cart-pole, Euler integration, 500 steps."""

    env_id = "CartPole-v1"
    obs_dim = 4
    state_dim = 4
    n_actions = 2
    max_episode_steps = 500
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass = masspole + masscart
    polemass_length = masspole * length
    theta_threshold = 12 * 2 * math.pi / 360
    x_threshold = 2.4

    def initial_states(self) -> Array:
        return self._uniform([-0.05] * 4, [0.05] * 4)

    def dynamics(self, state: Array, actions: Array) -> tuple[Array, Array, Array]:
        ops = self.ops
        x, x_dot, theta, theta_dot = state[:, 0], state[:, 1], state[:, 2], state[:, 3]
        force = ops.where(actions == 1, self.force_mag, -self.force_mag)
        costheta, sintheta = ops.cos(theta), ops.sin(theta)
        temp = (force + self.polemass_length * (theta_dot * theta_dot) * sintheta) / self.total_mass
        thetaacc = (self.gravity * sintheta - costheta * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * (costheta * costheta) / self.total_mass)
        )
        xacc = temp - self.polemass_length * thetaacc * costheta / self.total_mass
        x = x + self.tau * x_dot
        x_dot = x_dot + self.tau * xacc
        theta = theta + self.tau * theta_dot
        theta_dot = theta_dot + self.tau * thetaacc
        terminated = (
            (x < -self.x_threshold)
            | (x > self.x_threshold)
            | (theta < -self.theta_threshold)
            | (theta > self.theta_threshold)
        )
        # Reward 1 on every step, the terminal one included (gymnasium's default reward).
        return ops.stack([x, x_dot, theta, theta_dot], 1), ops.full((len(x),), 1.0, "float64"), terminated

    def observe(self, state: Array) -> Array:
        return self.ops.astype(state, "float32")


class Acrobot(ArrayEnv):
    """``Acrobot-v1``: Sutton (1996)'s two-link arm, the book's dynamics, one RK4 step of 0.2 s, 500 steps."""

    env_id = "Acrobot-v1"
    obs_dim = 6
    state_dim = 4
    n_actions = 3
    max_episode_steps = 500
    dt = 0.2
    m1 = m2 = l1 = 1.0
    lc1 = lc2 = 0.5
    moi = 1.0
    g = 9.8
    max_vel_1, max_vel_2 = 4 * math.pi, 9 * math.pi

    def initial_states(self) -> Array:
        # gymnasium draws in float64 and stores the initial state as float32.
        drawn = self._uniform([-0.1] * 4, [0.1] * 4)
        return self.ops.astype(self.ops.astype(drawn, "float32"), "float64")

    def _dsdt(self, s: Array, torque: Array) -> Array:
        ops = self.ops
        m1, m2, l1, lc1, lc2, i1, i2, g = (
            self.m1,
            self.m2,
            self.l1,
            self.lc1,
            self.lc2,
            self.moi,
            self.moi,
            self.g,
        )
        theta1, theta2, dtheta1, dtheta2 = s[:, 0], s[:, 1], s[:, 2], s[:, 3]
        cos2, sin2 = ops.cos(theta2), ops.sin(theta2)
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + i1 + i2
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + i2
        phi2 = m2 * lc2 * g * ops.cos(theta1 + theta2 - math.pi / 2.0)
        phi1 = (
            -m2 * l1 * lc2 * dtheta2**2 * sin2
            - 2 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
            + (m1 * lc1 + m2 * l1) * g * ops.cos(theta1 - math.pi / 2)
            + phi2
        )
        ddtheta2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * dtheta1**2 * sin2 - phi2) / (
            m2 * lc2**2 + i2 - d2**2 / d1
        )
        ddtheta1 = -(d2 * ddtheta2 + phi1) / d1
        return ops.stack([dtheta1, dtheta2, ddtheta1, ddtheta2], 1)

    def _wrap(self, x: Array) -> Array:
        """gymnasium's ``wrap`` to [-pi, pi] by repeated subtraction (not a modulo, which rounds otherwise);
        three passes cover any angle one RK4 step of bounded velocities can reach."""
        ops = self.ops
        for _ in range(3):
            x = ops.where(x > math.pi, x - 2 * math.pi, x)
            x = ops.where(x < -math.pi, x + 2 * math.pi, x)
        return x

    def dynamics(self, state: Array, actions: Array) -> tuple[Array, Array, Array]:
        ops = self.ops
        torque = ops.astype(actions, "float64") - 1.0
        dt, dt2 = self.dt, self.dt / 2.0
        k1 = self._dsdt(state, torque)
        k2 = self._dsdt(state + dt2 * k1, torque)
        k3 = self._dsdt(state + dt2 * k2, torque)
        k4 = self._dsdt(state + dt * k3, torque)
        ns = state + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        ns = ops.stack(
            [
                self._wrap(ns[:, 0]),
                self._wrap(ns[:, 1]),
                ops.clip(ns[:, 2], -self.max_vel_1, self.max_vel_1),
                ops.clip(ns[:, 3], -self.max_vel_2, self.max_vel_2),
            ],
            1,
        )
        terminated = -ops.cos(ns[:, 0]) - ops.cos(ns[:, 1] + ns[:, 0]) > 1.0
        return ns, ops.astype(terminated, "float64") - 1.0, terminated

    def observe(self, state: Array) -> Array:
        ops = self.ops
        s0, s1 = state[:, 0], state[:, 1]
        obs = ops.stack([ops.cos(s0), ops.sin(s0), ops.cos(s1), ops.sin(s1), state[:, 2], state[:, 3]], 1)
        return ops.astype(obs, "float32")


class MountainCar(ArrayEnv):
    """``MountainCar-v0``: Moore (1990)'s car in a valley, 200 steps."""

    env_id = "MountainCar-v0"
    obs_dim = 2
    state_dim = 2
    n_actions = 3
    max_episode_steps = 200
    min_position, max_position, max_speed, goal_position = -1.2, 0.6, 0.07, 0.5
    force, gravity = 0.001, 0.0025

    def initial_states(self) -> Array:
        return self._uniform([-0.6, 0.0], [-0.4, 0.0])

    def dynamics(self, state: Array, actions: Array) -> tuple[Array, Array, Array]:
        ops = self.ops
        position, velocity = state[:, 0], state[:, 1]
        push = ops.astype(actions, "float64") - 1.0
        velocity = velocity + push * self.force + ops.cos(3 * position) * (-self.gravity)
        velocity = ops.clip(velocity, -self.max_speed, self.max_speed)
        position = ops.clip(position + velocity, self.min_position, self.max_position)
        # An inelastic wall on the left.
        velocity = ops.where((position == self.min_position) & (velocity < 0), velocity * 0, velocity)
        terminated = (position >= self.goal_position) & (velocity >= 0)
        return ops.stack([position, velocity], 1), ops.full((len(position),), -1.0, "float64"), terminated

    def observe(self, state: Array) -> Array:
        return self.ops.astype(state, "float32")


class Pendulum(ArrayEnv):
    """``Pendulum-v1``: the inverted pendulum swing-up (torque in [-2, 2]), never terminates, 200 steps."""

    env_id = "Pendulum-v1"
    obs_dim = 3
    state_dim = 2
    n_actions = None
    max_episode_steps = 200
    max_speed, max_torque, dt, g, mass, length = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0

    def initial_states(self) -> Array:
        return self._uniform([-math.pi, -1.0], [math.pi, 1.0])

    def dynamics(self, state: Array, actions: Array) -> tuple[Array, Array, Array]:
        ops = self.ops
        theta, theta_dot = state[:, 0], state[:, 1]
        u = ops.astype(ops.clip(actions[:, 0], -self.max_torque, self.max_torque), "float64")
        normalized = (theta + math.pi) % (2 * math.pi) - math.pi
        costs = normalized**2 + 0.1 * theta_dot**2 + 0.001 * (u * u)
        new_theta_dot = (
            theta_dot
            + (3 * self.g / (2 * self.length) * ops.sin(theta) + 3.0 / (self.mass * self.length**2) * u)
            * self.dt
        )
        new_theta_dot = ops.clip(new_theta_dot, -self.max_speed, self.max_speed)
        new_theta = theta + new_theta_dot * self.dt
        return ops.stack([new_theta, new_theta_dot], 1), -costs, ops.zeros((len(theta),), "bool")

    def observe(self, state: Array) -> Array:
        ops = self.ops
        theta = state[:, 0]
        return ops.astype(ops.stack([ops.cos(theta), ops.sin(theta), state[:, 1]], 1), "float32")


ARRAY_ENVS: dict[str, type[ArrayEnv]] = {
    cls.env_id: cls for cls in (CartPole, Acrobot, MountainCar, Pendulum)
}


def make_array_env(env_id: str, n: int, ops: Ops, streams: Streams | None = None) -> ArrayEnv:
    """``n`` copies of ``env_id`` as arrays.

    :param streams: One random stream per copy (default: seeds ``0 .. n - 1``).

    :raises QiterError: No array version of ``env_id`` exists (the line lists those that do).
    """
    if env_id not in ARRAY_ENVS:
        raise QiterError(
            f"{env_id!r} has no array version for populations; supported: {', '.join(ARRAY_ENVS)}"
        )
    return ARRAY_ENVS[env_id](n, ops, streams)
