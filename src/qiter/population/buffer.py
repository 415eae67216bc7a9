"""N replay buffers in one table: agent ``i``'s transitions are block ``i`` of its rows.

The agents step in lockstep, so all buffers fill at the same position and hold the same number of
transitions; one position counter serves them all. A transition is one float32 row
``[s, s', a, r, terminated]``, so sampling one costs one random memory access instead of five (the
buffers of a population are far larger than the caches, and sampling is bound by those accesses).
Sampling draws an independent minibatch per agent (uniform indices, as :class:`qiter.buffers.ReplayBuffer`
draws them, from the agent's own random stream) and gathers every agent's rows with one indexing call.
"""

from __future__ import annotations

from qiter.core.arrays import Array, Ops
from qiter.population.streams import SAMPLE, Streams


def row_width(obs_dim: int) -> int:
    """Floats in one stored transition: two observations, the action, the reward, the terminal flag."""
    return 2 * obs_dim + 3


def buffer_bytes(n_agents: int, capacity: int, obs_dim: int) -> int:
    """Memory the buffers of a population take (for the check before allocating)."""
    return n_agents * capacity * row_width(obs_dim) * 4


class PopulationBuffer:
    """Ring buffers of ``capacity`` transitions for each of ``n_agents`` agents.

    :param ops: The array backend.
    :param streams: The agents' random streams (their number is N).
    :param capacity: Transitions kept per agent.
    :param obs_dim: Observation size.
    """

    def __init__(self, ops: Ops, streams: Streams, capacity: int, obs_dim: int) -> None:
        self.ops, self.streams = ops, streams
        self.n, self.capacity, self.obs_dim = streams.n, capacity, obs_dim
        self.table = ops.zeros((self.n * capacity, row_width(obs_dim)))
        # Row offset of each agent's block in the table.
        self.offsets = ops.arange(self.n)[:, None] * capacity
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

    def add(self, obs: Array, actions: Array, rewards: Array, next_obs: Array, terminateds: Array) -> None:
        """Store one transition per agent (arrays with a leading axis of N)."""
        ops = self.ops
        # One scatter of whole rows at positions computed from the counters: the same code whether they are
        # host integers or device tensors (a CUDA graph's), in place for the latter.
        columns = [ops.astype(x, "float32")[:, None] for x in (actions, rewards, terminateds)]
        ops.put_rows(self.table, self.offsets[:, 0] + self.pos, ops.concat([obs, next_obs, *columns], 1))
        self.pos += 1
        self.pos %= self.capacity
        self.size += self.size < self.capacity

    def sample(self, batch_size: int) -> tuple[Array, Array, Array, Array, Array]:
        """An independent uniform minibatch per agent: ``(obs, actions, rewards, next_obs, terminateds)``,
        each with leading axes ``(N, batch_size)``."""
        ops, d = self.ops, self.obs_dim
        self.samples += 1
        index = self.streams.integers(SAMPLE, self.samples, self.size, (batch_size,)) + self.offsets
        rows = ops.take_rows(self.table, index)  # (N, B, width): one gather
        return (
            rows[..., :d],
            ops.astype(rows[..., 2 * d], "int64"),
            rows[..., 2 * d + 1],
            rows[..., d : 2 * d],
            rows[..., 2 * d + 2] > 0.5,
        )
