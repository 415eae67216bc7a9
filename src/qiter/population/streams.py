"""Random streams for populations: one per agent (or environment copy), computed from a counter.

Why counter-based: a population draws its random numbers for all agents in one array call, yet each agent
must have a stream of its own, so that agent ``i`` runs the same whether it trains alone or beside 4,095
others, and whatever the others' seeds. A stateful generator (numpy's ``Generator``, torch's) gives one
sequence that the agents would share; advancing N of them would be a Python loop over agents. A
counter-based generator (Salmon et al., 2011, "Parallel random numbers: as easy as 1, 2, 3") instead
computes a number as a hash of ``(key, purpose, counter, index)``: the key is the agent's (a hash of its
seed), the purpose says what the number is for (exploration, replay sampling, resets...), the counter is
the step and the index the position in the draw. Nothing is stored or advanced, so a draw for N agents is
a few elementwise integer operations, the same on numpy, torch's CPU backend and CUDA (the numbers agree
across backends), and never reads a device value back.

The hash is Wellons' ``lowbias32`` integer mixer, applied to each input in turn. Its values are 32 bits,
which is plenty for what populations draw (initial states, epsilon-greedy coins, replay indices below
2^31); 32-bit lanes are computed in int64 arrays, masked after each product, as torch has no unsigned
64-bit arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from qiter.core.arrays import Array, Ops

MASK = 0xFFFFFFFF

# What a draw is for: the same agent, step and index give independent numbers for different purposes.
INIT = 1  # network initialization
EXPLORE = 2  # epsilon-greedy: explore or not, and the random action (3 was the action's own, merged)
RESET = 4  # environment initial states
SAMPLE = 5  # replay minibatch indices
EVALUATE = 6  # keys of evaluation episodes
COPIES = 7  # keys of an agent's environment copies (n_envs > 1)

#: Steps whose per-step draws are made at once (:meth:`Streams.per_step`).
STEP_BLOCK = 64


def mix32(x: Array) -> Array:
    """``lowbias32``: a bijection of 32-bit integers whose every output bit depends on every input bit.

    :param x: Integers in ``[0, 2^32)`` (an int64 array, or a Python int).
    """
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & MASK
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & MASK
    return x ^ (x >> 16)


def to_uniform(ops: Ops, bits: Array, dtype: str = "float32") -> Array:
    """Uniform numbers in ``[0, 1)`` from 32 random bits (24 bits of resolution in float32, 32 in float64)."""
    if dtype == "float32":
        return ops.astype(bits >> 8, "float32") * (2.0**-24)
    return ops.astype(bits, "float64") * (2.0**-32)


def to_integers(bits: Array, high: int) -> Array:
    """Uniform integers in ``[0, high)`` from 32 random bits, by a multiply and a shift (Lemire, 2019):
    no division, a bias below ``high / 2^32``.

    :param high: Exclusive bound, at most 2^31.
    """
    return (bits * high) >> 32


def seed_key(seed: int) -> int:
    """The 32-bit key of a stream seeded with ``seed`` (any integer: its 64 low bits count)."""
    seed &= 0xFFFFFFFFFFFFFFFF
    return int(mix32(mix32(seed & MASK) ^ mix32((seed >> 32) ^ 0x9E3779B9)))


class Streams:
    """One random stream per key, drawn for all keys at once.

    :param ops: The array backend the draws are made on.
    :param seeds: One seed per stream (for a population, each agent's seed).
    """

    def __init__(self, ops: Ops, seeds: Sequence[int]) -> None:
        self.ops = ops
        self.seeds = [int(s) for s in seeds]
        self.keys = ops.asarray(np.array([seed_key(s) for s in self.seeds], dtype=np.int64), "int64")
        self._index: dict[tuple[int, ...], Array] = {}
        self._blocks: dict[tuple[int, tuple[int, ...], str], tuple[int, Array]] = {}

    @property
    def n(self) -> int:
        return len(self.seeds)

    def bits(
        self, purpose: int, counter: int | Array, shape: tuple[int, ...] = (), row: Array | None = None
    ) -> Array:
        """32 random bits per element, int64 of shape ``(n, *shape)``: the ``counter``-th draw for
        ``purpose`` of every stream.

        :param purpose: What the numbers are for (:data:`EXPLORE`, :data:`SAMPLE`...).
        :param counter: Which draw (a step, a layer...): a non-negative integer below 2^63, or a 0-d int64
            tensor on the device holding one (the counters of a captured CUDA graph).
        :param shape: The shape of each stream's draw.
        :param row: Only row ``row`` (a 0-d device tensor) of each stream's draw: shape ``(n, *shape[1:])``,
            what ``[:, row]`` of the whole draw holds, at the cost of that row alone.
        """
        # The purpose and counter are the same for every stream: hashed once on the host.
        salt = mix32(mix32(purpose ^ mix32(counter & MASK)) ^ ((counter >> 32) & MASK))
        per_stream = mix32(self.keys ^ salt)
        if not shape:
            return mix32(per_stream)
        index = self._index.get(shape)
        if index is None:
            size = int(np.prod(shape))
            # Element indices pre-mixed once, so neighbouring elements differ in many bits.
            mixed = mix32(np.arange(size, dtype=np.int64) + 0x6A09E667) & MASK
            index = self._index[shape] = self.ops.asarray(mixed.reshape(shape), "int64")
        if row is not None:
            index, shape = self.ops.select(index, 0, row), shape[1:]
        # Two mixes per number in all (each is ten elementwise operations, a kernel each on a GPU).
        return mix32(per_stream.reshape((self.n,) + (1,) * len(shape)) ^ index)

    def uniform(
        self, purpose: int, counter: int, shape: tuple[int, ...] = (), dtype: str = "float32"
    ) -> Array:
        """Uniform draws in ``[0, 1)``, shape ``(n, *shape)`` (see :func:`to_uniform`)."""
        return to_uniform(self.ops, self.bits(purpose, counter, shape), dtype)

    def integers(
        self, purpose: int, counter: int | Array, high: int | Array, shape: tuple[int, ...] = ()
    ) -> Array:
        """Uniform integers in ``[0, high)``, int64 of shape ``(n, *shape)`` (see :func:`to_integers`)."""
        return to_integers(self.bits(purpose, counter, shape), high)

    def per_step(
        self, purpose: int, step: int | Array, shape: tuple[int, ...] = (), dtype: str = "bits"
    ) -> Array:
        """The draw of ``step`` for a purpose drawn once a step, made :data:`STEP_BLOCK` steps at a time:
        ``bits(purpose, step // STEP_BLOCK, (STEP_BLOCK, *shape))[:, step % STEP_BLOCK]``, converted to
        ``dtype`` (``"bits"``, or ``"float32"``/``"float64"`` uniforms).

        Why blocks: a draw for a few hundred numbers costs what its twenty array calls cost (twenty kernel
        launches on a GPU), whatever its size; one draw per 64 steps divides that by 64.
        """
        if not isinstance(step, int):
            # A step held on the device (a captured CUDA graph's counter): only the step's row of its block
            # is computed, on the device, at every call: the same numbers as the cached path's.
            drawn = self.bits(purpose, step // STEP_BLOCK, (STEP_BLOCK, *shape), row=step % STEP_BLOCK)
            return drawn if dtype == "bits" else to_uniform(self.ops, drawn, dtype)
        block, offset = divmod(step, STEP_BLOCK)
        key = (purpose, shape, dtype)
        cached = self._blocks.get(key)
        if cached is None or cached[0] != block:
            drawn = self.bits(purpose, block, (STEP_BLOCK, *shape))
            cached = self._blocks[key] = (
                block,
                drawn if dtype == "bits" else to_uniform(self.ops, drawn, dtype),
            )
        return cached[1][:, offset]

    def children(self, purpose: int, counter: int, count: int) -> Streams:
        """``n * count`` new streams, ``count`` per stream in stream-major order (a population's evaluation:
        ``count`` episodes per agent, each episode a stream of its own). Child ``j`` of a stream depends on
        its key, ``purpose``, ``counter`` and ``j`` only (not on ``count`` or on the other streams).

        :param counter: Which set of children (an evaluation's step).
        """
        high = self.ops.to_numpy(self.bits(purpose, counter, (count,)))  # (n, count), one read-back
        return Streams(self.ops, [(int(h) << 32) | j for row in high for j, h in enumerate(row)])
