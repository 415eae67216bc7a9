"""A population split over processes, one slice of agents per core.

Why processes: the agents of a population are independent and draw from their own random streams, so
slices of a population trained apart are the same run, agent by agent, and on a machine with several cores
each slice can have one. Threads do not get there: a population step is a few hundred numpy calls, and
between the large ones (which release the GIL) Python holds it. Measured on the 2-core machine, 64 CartPole
agents, 4,000 steps: two slices in two threads ran 1.21x one slice, in two processes 1.93x.

The slices step together, segment by segment (the training loop's log and evaluation points): every
worker gets the command, then every answer is awaited. The last slice lives in this process (one process
fewer to start), and a single slice is just a :class:`~qiter.population.lockstep.Population` here.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import signal
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch as th
from threadpoolctl import threadpool_limits

from qiter.dqn.config import DQNConfig
from qiter.errors import QiterError
from qiter.population.lockstep import Population

#: The smallest slice worth a process of its own (two slices of 32 CartPole agents ran 1.98x one process;
#: smaller slices were not measured, and a process costs a second or two to start).
MIN_AGENTS_PER_WORKER = 16


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers(n_agents: int) -> int:
    """On the CPU: one process per usable core, with at least :data:`MIN_AGENTS_PER_WORKER` agents each."""
    return max(1, min(usable_cores(), n_agents // MIN_AGENTS_PER_WORKER))


def _serve(conn: Connection, configs: list[DQNConfig], backend: str, threads: int | None) -> None:
    """A worker: build the slice's population, then run the commands that arrive until ``close``."""
    # Ctrl-C in a terminal reaches the whole process group: the parent alone decides to stop, after the
    # step, and asks the workers for their state to save; SIGTERM likewise goes through the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A diverging agent overflows before the parent's check names it: no numpy warnings on the way there.
    np.seterr(over="ignore", invalid="ignore")
    if threads is not None:
        threadpool_limits(threads, user_api="blas")
        th.set_num_threads(threads)
    try:
        population = Population(configs, backend)
        conn.send(("ok", None))
        while True:
            method, args = conn.recv()
            if method == "close":
                break
            try:
                conn.send(("ok", getattr(population, method)(*args)))
            except Exception as error:  # sent to the parent, which reports it in one line
                conn.send(("error", f"{type(error).__name__}: {error}"))
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        pass  # the parent was interrupted or is gone: nothing to save here
    except Exception as error:
        conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


class WorkerSlice:
    """A slice in a child process, driven through a pipe."""

    def __init__(self, context: Any, configs: list[DQNConfig], backend: str, threads: int | None) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, configs, backend, threads), daemon=True)
        self.process.start()
        child.close()  # the parent keeps its end only, so a dead child reads as end of file

    def died(self) -> QiterError:
        self.process.join(timeout=1)
        code = self.process.exitcode
        if code is not None and code > 0:
            # A worker imports the parent's main module: a script that calls train() at its top level
            # calls it again there, and multiprocessing refuses (its error is printed above this line).
            return QiterError(
                f"a population worker process failed to start (exit code {code}, its error above): from a "
                'script, call train() under `if __name__ == "__main__":`, or pass workers=1'
            )
        return QiterError(f"a population worker process died (exit code {code}): killed, or out of memory")

    def submit(self, method: str, *args: Any) -> None:
        try:
            self.conn.send((method, args))
        except (BrokenPipeError, ConnectionResetError):
            raise self.died() from None

    def result(self) -> Any:
        try:
            status, value = self.conn.recv()
        except (EOFError, ConnectionResetError):
            raise self.died() from None
        if status == "error":
            raise QiterError(f"a population worker failed: {value}")
        return value

    def close(self) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self.conn.send(("close", ()))
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()  # it ignores SIGTERM
        self.conn.close()


class LocalSlice:
    """The slice that lives in this process."""

    def __init__(self, configs: list[DQNConfig], backend: str, cuda_graphs: bool = True) -> None:
        self.population = Population(configs, backend, cuda_graphs)
        self.value: Any = None

    def submit(self, method: str, *args: Any) -> None:
        self.value = getattr(self.population, method)(*args)

    def result(self) -> Any:
        return self.value

    def close(self) -> None:
        pass


class Shards:
    """A population of ``len(configs)`` agents in ``workers`` contiguous slices; a context manager that
    stops the worker processes on exit (an error or an interruption included).

    :param configs: One config per agent.
    :param backend: ``"numpy"`` or ``"torch"``.
    :param workers: Number of slices (processes, this one included).
    :param threads: BLAS and torch threads in each worker process (``None``: leave them).
    :param cuda_graphs: On CUDA, replay the step from captured graphs (:class:`~qiter.population.lockstep.StepGraphs`).
    """

    def __init__(
        self,
        configs: list[DQNConfig],
        backend: str,
        workers: int,
        threads: int | None,
        cuda_graphs: bool = True,
    ) -> None:
        workers = max(1, min(workers, len(configs)))
        bounds = np.linspace(0, len(configs), workers + 1).round().astype(int)
        self.bounds = [int(b) for b in bounds]
        slices = [configs[a:b] for a, b in itertools.pairwise(bounds)]
        self.slices: list[WorkerSlice | LocalSlice] = []
        try:
            # spawn, not fork: a forked child would inherit torch's thread pools in an undefined state.
            context = mp.get_context("spawn")
            self.slices += [WorkerSlice(context, part, backend, threads) for part in slices[:-1]]
            self.slices.append(LocalSlice(slices[-1], backend, cuda_graphs))
            for part in self.slices:
                if isinstance(part, WorkerSlice):
                    part.result()
        except BaseException:
            self.close()
            raise

    def call(self, method: str, *args: Any) -> list[Any]:
        """``Population.method(*args)`` on every slice at once; their answers, in agent order."""
        for part in self.slices:  # the workers first: the local slice runs while they work
            part.submit(method, *args)
        return [part.result() for part in self.slices]

    def concat(self, method: str, *args: Any) -> np.ndarray:
        """:meth:`call` for a method answering one value per agent: the answers end to end."""
        return np.concatenate(self.call(method, *args))

    def layers(self) -> list[tuple[np.ndarray, ...]]:
        """Every agent's layers, as :meth:`Population.layers`."""
        parts = self.call("layers")
        return [
            tuple(np.concatenate([p[i][k] for p in parts]) for k in range(len(parts[0][i])))
            for i in range(len(parts[0]))
        ]

    def state_dict(self, step: int) -> dict[str, Any]:
        """The whole population's state (:meth:`Population.state_dict`): the slices' arrays end to end
        along the agent axis, their counters (equal in every slice: they step in lockstep) once."""
        parts = self.call("state_dict", step)
        for part in parts[1:]:
            if part["counters"] != parts[0]["counters"]:  # pragma: no cover - lockstep guarantees it
                raise RuntimeError(
                    f"the slices' counters differ: {part['counters']} vs {parts[0]['counters']}"
                )
        arrays = {k: np.concatenate([p["arrays"][k] for p in parts]) for k in parts[0]["arrays"]}
        return {"arrays": arrays, "counters": parts[0]["counters"]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, each slice its agents' rows (the split may differ from the saved run's)."""
        for part, (a, b) in zip(self.slices, itertools.pairwise(self.bounds)):
            part.submit("load_state_dict", {"arrays": {k: v[a:b] for k, v in state["arrays"].items()},
                                            "counters": state["counters"]})  # fmt: skip
        for part in self.slices:
            part.result()

    def close(self) -> None:
        for part in self.slices:
            part.close()

    def __enter__(self) -> Shards:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
