"""N replay buffers in one table: agent ``i``'s transitions are block ``i`` of its rows.

The agents step in lockstep, so all buffers fill at the same position and hold the same number of
transitions; one position counter serves them all. A transition is one float32 row
``[s, s', a, r, terminated, done]`` (``done``: terminated or truncated, where an n-step return stops), so
sampling one costs one random memory access instead of six (the buffers of a population are far larger
than the caches, and sampling is bound by those accesses). With ``n_envs`` copies per agent, each step
writes ``n_envs`` consecutive rows per agent, copy by copy, as :class:`qiter.buffers.ReplayBuffer` does.

Sampling draws an independent minibatch per agent (uniform indices, as :class:`qiter.buffers.ReplayBuffer`
draws them, from the agent's own random stream) and gathers every agent's rows with one indexing call;
n-step returns gather ``n - 1`` more rows per sample, the same copy's next transitions, and cut the trace
where the single agent's buffer cuts it: at an episode's end, at the newest transition, and (with
``n_step_cut: greedy``) at the first action that differs from the online network's greedy one.
"""

from __future__ import annotations

from collections.abc import Callable

from qiter.core.arrays import Array, Ops
from qiter.population.streams import SAMPLE, Streams

# Columns after the two observations.
ACTION, REWARD, TERMINATED, DONE = range(4)


def row_width(obs_dim: int) -> int:
    """Floats in one stored transition: two observations, the action, the reward, the two end flags."""
    return 2 * obs_dim + 4


def buffer_bytes(n_agents: int, capacity: int, obs_dim: int) -> int:
    """Memory the buffers of a population take (for the check before allocating)."""
    return n_agents * capacity * row_width(obs_dim) * 4


def buffer_capacity(replay_buffer_size: int, n_timesteps: int, n_envs: int) -> int:
    """Transitions each agent's buffer keeps: no more than the run stores, a whole number of steps of its
    ``n_envs`` copies (as the single agent's buffer rounds ``replay_buffer_size``)."""
    size = min(replay_buffer_size, n_timesteps + n_envs - 1)
    return max(size - size % n_envs, n_envs)


class PopulationBuffer:
    """Ring buffers of ``capacity`` transitions for each of ``n_agents`` agents.

    :param ops: The array backend.
    :param streams: The agents' random streams (their number is N).
    :param capacity: Transitions kept per agent (a multiple of ``n_envs``).
    :param obs_dim: Observation size.
    :param n_envs: Environment copies per agent: each :meth:`add` stores that many transitions per agent.
    :param n_steps: Sample n-step returns (1: one-step transitions).
    :param gamma: Each agent's discount ``(N,)`` (for n-step returns).
    """

    def __init__(
        self,
        ops: Ops,
        streams: Streams,
        capacity: int,
        obs_dim: int,
        n_envs: int = 1,
        n_steps: int = 1,
        gamma: Array | None = None,
    ) -> None:
        assert capacity % n_envs == 0, f"capacity {capacity} is not a multiple of n_envs {n_envs}"
        self.ops, self.streams = ops, streams
        self.n, self.capacity, self.obs_dim = streams.n, capacity, obs_dim
        self.n_envs, self.n_steps = n_envs, n_steps
        self.gamma = None if gamma is None else gamma[:, None]
        self.table = ops.zeros((self.n * capacity, row_width(obs_dim)))
        # Row offset of each agent's block in the table, and the rows a step writes (agent-major, as the
        # environment copies are ordered), relative to the position.
        self.offsets = ops.arange(self.n)[:, None] * capacity
        self.slots = (self.offsets + ops.arange(n_envs)[None, :]).reshape(-1)
        self.pos: int | Array = 0
        self.size: int | Array = 0
        self.samples: int | Array = 0  # minibatches drawn so far: the counter of the streams

    def use_device_counters(self) -> None:
        """Keep the position, the size and the sample counter in 0-d tensors on the device, updated in
        place, as a captured CUDA graph needs (torch backend only)."""
        ops = self.ops
        self.pos, self.size, self.samples = (
            ops.asarray(x, "int64") for x in (self.pos, self.size, self.samples)
        )

    def add(
        self, obs: Array, actions: Array, rewards: Array, next_obs: Array, terminateds: Array, dones: Array
    ) -> None:
        """Store one transition per environment copy (arrays with a leading axis of ``N * n_envs``,
        agent-major); ``dones`` are the copies whose episode ended (terminated or truncated)."""
        ops = self.ops
        # One scatter of whole rows at positions computed from the counters: the same code whether they are
        # host integers or device tensors (a CUDA graph's), in place for the latter.
        columns = [ops.astype(x, "float32")[:, None] for x in (actions, rewards, terminateds, dones)]
        ops.put_rows(self.table, self.slots + self.pos, ops.concat([obs, next_obs, *columns], 1))
        self.pos += self.n_envs
        self.pos %= self.capacity
        self.size += (self.size < self.capacity) * self.n_envs

    def sample(
        self, batch_size: int, greedy: Callable[[Array], Array] | None = None
    ) -> tuple[Array, Array, Array, Array, Array, Array | None]:
        """An independent uniform minibatch per agent: ``(obs, actions, rewards, next_obs, terminateds,
        discounts)``, each with leading axes ``(N, batch_size)``; ``discounts`` (each sample's ``gamma^k``) is
        ``None`` for one-step transitions.

        :param greedy: With n-step returns, the online networks' greedy actions ``(N, B, obs_dim) -> (N, B)``:
            the trace is cut at the first stored action that differs from them.
        """
        self.samples += 1
        return self.samples_at(self.streams.integers(SAMPLE, self.samples, self.size, (batch_size,)), greedy)

    def samples_at(
        self, index: Array, greedy: Callable[[Array], Array] | None = None
    ) -> tuple[Array, Array, Array, Array, Array, Array | None]:
        """The transitions at positions ``index`` ``(N, B)`` of each agent's buffer (see :meth:`sample`)."""
        d = self.obs_dim
        rows = self.ops.take_rows(self.table, index + self.offsets)  # (N, B, width): one gather
        if self.n_steps == 1:
            return self._split(rows, rows[..., 2 * d + REWARD], rows, None)
        return self._n_step(index, rows, greedy)

    def _split(
        self, first: Array, rewards: Array, last: Array, discounts: Array | None
    ) -> tuple[Array, Array, Array, Array, Array, Array | None]:
        d = self.obs_dim
        return (
            first[..., :d],
            self.ops.astype(first[..., 2 * d + ACTION], "int64"),
            rewards,
            last[..., d : 2 * d],
            last[..., 2 * d + TERMINATED] > 0.5,
            discounts,
        )

    def _n_step(
        self, index: Array, rows: Array, greedy: Callable[[Array], Array] | None
    ) -> tuple[Array, Array, Array, Array, Array, Array | None]:
        """n-step returns of the sampled rows, as :meth:`qiter.buffers.ReplayBuffer._n_step_samples`
        computes them, one later step of the trace at a time (``n`` is small; each step is one gather)."""
        ops, d, n_envs, capacity = self.ops, self.obs_dim, self.n_envs, self.capacity
        assert self.gamma is not None
        # Transitions of the same copy written after each sampled one: the trace may not run past the newest.
        newest = (self.pos - n_envs + index % n_envs) % capacity
        n_after = (newest - index) % capacity // n_envs
        rewards = rows[..., 2 * d + REWARD]
        last = rows
        n_valid = ops.full(tuple(index.shape), 1.0)
        discount = self.gamma
        goes_on = rows[..., 2 * d + DONE] < 0.5  # the trace reaches step k: no episode end before it
        for k in range(1, self.n_steps):
            step_rows = ops.take_rows(self.table, (index + k * n_envs) % capacity + self.offsets)
            valid = goes_on & (n_after >= k)
            if greedy is not None:
                valid = valid & (
                    greedy(step_rows[..., :d]) == ops.astype(step_rows[..., 2 * d + ACTION], "int64")
                )
            rewards = rewards + ops.where(valid, discount * step_rows[..., 2 * d + REWARD], 0.0)
            last = ops.where(valid[..., None], step_rows, last)
            n_valid = n_valid + ops.astype(valid, "float32")
            goes_on = valid & (step_rows[..., 2 * d + DONE] < 0.5)
            discount = discount * self.gamma
        return self._split(rows, rewards, last, self.gamma**n_valid)
