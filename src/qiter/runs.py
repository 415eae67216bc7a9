"""Run folders: where a training run keeps its config, logs, checkpoints and evaluation results.

One run, one folder::

    runs/<env_id>/<algo>-<seed>-<YYYYmmdd-HHMMSS>/
        config.yaml          the resolved config (what a resume reads back)
        episodes.csv         one row per finished episode (return, length, epsilon)
        train.csv            one row per log interval (loss, mean_q, max_q, epsilon, learning_rate, steps_per_second)
        eval.csv             one row per periodic evaluation (mean_return, std_return)
        tb/                  the same scalars for TensorBoard (``<kind>/<key>``)
        checkpoints/         ``latest.pt``, ``best.pt`` (written atomically)
        eval.json            the final evaluation
        videos/

Everything here is plain files, so a crash loses at most the row being written, and a checkpoint on disk is
always complete: it is written to a temporary file, synced, then renamed over the old one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import pickle
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import torch
import yaml

from qiter.errors import QiterError

CHECKPOINT_PREFIX = "qiter-"
# The format of a checkpoint whose state names none (an agent's checkpoints name their own).
CHECKPOINT_FORMAT = "qiter-checkpoint"
CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.yaml"
EVAL_FILE = "eval.json"
# The best agent of a population folder (``qiter population --save-best``).
POPULATION_BEST = "best.pt"

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_PREFIX",
    "RunLogger",
    "check_checkpoint_of_run",
    "check_writable",
    "claim_run_dir",
    "latest_checkpoint",
    "load_checkpoint",
    "load_run_config",
    "make_run_dir",
    "read_csv",
    "resolve_checkpoint",
    "safe_name",
    "save_checkpoint",
    "save_config",
    "truncate_logs",
    "write_eval",
]


# ---------------------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------------------


def safe_name(name: str) -> str:
    """A file-name-safe version of an env id (``ALE/Pong-v5`` -> ``ALE_Pong-v5``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "env"


def make_run_dir(root: str | Path, env_id: str, algo: str, seed: int) -> Path:
    """Create a new, empty run folder ``root/<env_id>/<algo>-<seed>-<YYYYmmdd-HHMMSS>``.

    Two runs started in the same second get distinct folders (``...-HHMMSS-1``, ``-2``...). Characters that
    are not safe in a file name (such as the ``/`` of ``ALE/Pong-v5``) become ``_``.

    :param root: Folder that holds all runs (created if needed).
    :param env_id: Environment id.
    :param algo: Algorithm name, e.g. ``"dqn"``.
    :param seed: Random seed of the run.
    :return: The new folder.
    :raises QiterError: The folder cannot be created (not writable, a name too long, a file in the way).
    """
    parent = Path(root) / safe_name(env_id)
    base = f"{safe_name(algo)}-{seed}-{datetime.now():%Y%m%d-%H%M%S}"
    check_writable(parent / base, f"the run folder {parent / base}")
    _make_folder(parent, "the run folder")
    for i in range(10_000):
        run_dir = parent / (base if i == 0 else f"{base}-{i}")
        try:
            run_dir.mkdir()  # atomic: fails if another process took this name first
        except FileExistsError:
            continue
        except OSError as e:
            raise QiterError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None
        return run_dir
    raise QiterError(f"could not create a new run folder under {parent}")  # pragma: no cover


def _make_folder(path: Path, what: str) -> None:
    """``mkdir -p path``, with a failure as one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise QiterError(f"cannot create {what} {path}: a file is in the way") from None
    except OSError as e:
        raise QiterError(f"cannot create {what} {path}: {e.strerror or e}") from None


def _umask() -> int:
    """The process umask, read without ever loosening it (``os.umask`` can only read it by setting it)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere read it by setting a private mask for that instant, not 0: a file another thread creates
    # meanwhile is then at worst private, never world-writable.
    old = os.umask(0o077)
    os.umask(old)
    return old


def _check_name_lengths(path: Path, what: str) -> None:
    """One line for a name longer than the file system takes (even ``os.stat`` fails on it, ENAMETOOLONG)."""
    try:
        limit = os.pathconf(".", "PC_NAME_MAX")
    except (OSError, ValueError):  # pragma: no cover - a system without pathconf
        limit = 255
    for name in path.parts:
        size = len(os.fsencode(name))
        if size > limit:
            raise QiterError(
                f"{what}: the name {name[:30]}... is {size} bytes long, longer than the file system allows "
                f"({limit})"
            )


def check_writable(folder: str | Path, what: str) -> None:
    """Raise one line now if files cannot be written in ``folder`` (created later if missing), before any
    work: the nearest folder that exists must be a folder, and one a file can be created in.

    :param folder: The folder (it need not exist yet).
    :param what: How the user named it, for the message (``"--out runs/x"``).
    :raises QiterError: A file in the way, a folder without write permission, a read-only file system, a
        name longer than the file system allows.
    """
    path = Path(folder)
    _check_name_lengths(path, what)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be made: {existing} is a file"
        raise QiterError(f"{what}: {path} {where}, not a folder")
    try:
        # A real write (then removed): permissions, ACLs and read-only mounts all answer the same way.
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise QiterError(f"{what}: cannot write in {existing} ({exc.strerror or exc})") from exc


# What a run writes in its folder: a folder holding any of these holds a run.
RUN_FILES = (
    CONFIG_FILE, EVAL_FILE, "episodes.csv", "train.csv", "eval.csv", "tb", CHECKPOINT_DIR,
    # a population's
    "agents", "agents.csv", "summary.md", "curves.png",
)  # fmt: skip


def claim_run_dir(run_dir: str | Path, overwrite: bool = False) -> Path:
    """Make ``run_dir`` ready for a new run: created if needed, refused if it already holds one.

    :param run_dir: The folder.
    :param overwrite: Delete the run already there (only the files a run writes; anything else stays).
    :raises QiterError: The folder holds a run and ``overwrite`` is false.
    """
    path = Path(run_dir)
    check_writable(path, f"the run folder {path}")
    if path.exists() and not path.is_dir():
        raise QiterError(f"{path} is a file, not a folder")
    found = [name for name in RUN_FILES if (path / name).exists()]
    if found and not overwrite:
        # Advise --resume only where there is something to resume from.
        resume = f"continue it with --resume {path}, or " if latest_checkpoint(path) is not None else ""
        raise QiterError(
            f"{path} already holds a run ({', '.join(found)}): {resume}replace it with --overwrite"
        )
    for name in found:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()
    _make_folder(path, "the run folder")
    return path


def truncate_logs(run_dir: str | Path, step: int) -> None:
    """Drop the CSV rows logged after ``step`` (a resume from a checkpoint at ``step``).

    A run killed after its last checkpoint has logged steps that the resumed run logs again; without this,
    they would appear twice and steps would go backwards. Each file is rewritten atomically (the CSVs of the
    folder and of its subfolders: a population's ``agents/``).

    :param run_dir: The run folder.
    :param step: The checkpoint's step: rows with a larger step go.
    """
    folder = Path(run_dir)
    for path in sorted(folder.glob("*.csv")) + sorted(folder.glob("*/*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        if "step" not in header:
            continue
        column = header.index("step")
        kept = [r for r in body if len(r) == len(header) and _step_of(r[column]) <= step]
        if len(kept) == len(body):
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(kept)
        _atomic_write_text(path, buffer.getvalue())


def _step_of(cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        return math.inf  # a torn row from a crash: dropped


def _atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Write ``path`` through a temporary file in the same folder, fsync, then a rename.

    A crash at any moment leaves either the previous file or the new one under ``path``, never a
    truncated one; the temporary file is removed if writing fails. The file gets the permissions of any
    other new file (``0o666`` less the umask), like the CSV logs beside it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp makes the file private (0o600) whatever the umask, and the rename would keep that.
            os.chmod(tmp, 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file atomically (see :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (an empty file is an empty mapping).

    :param path: An existing file.
    :return: The mapping.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise QiterError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise QiterError(f"{path} should hold a mapping of config keys to values")
    return data


def save_config(run_dir: str | Path, config_dict: Mapping[str, Any]) -> Path:
    """Write the resolved config to ``run_dir/config.yaml`` (keys in the given order).

    :return: The path of the file.
    """
    path = Path(run_dir) / CONFIG_FILE
    _atomic_write_text(path, yaml.safe_dump(dict(config_dict), sort_keys=False, default_flow_style=False))
    return path


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """Read ``run_dir/config.yaml`` back as a plain dict (turn it into a config with ``config_from_dict``)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise QiterError(f"{Path(run_dir)} is not a run folder (no {CONFIG_FILE})")
    return read_yaml_mapping(path)


def write_eval(run_dir: str | Path, result: Mapping[str, Any]) -> Path:
    """Write the final evaluation to ``run_dir/eval.json``.

    :return: The path of the file.
    """
    path = Path(run_dir) / EVAL_FILE
    _atomic_write_text(path, json.dumps(_to_jsonable(result), indent=2) + "\n")
    return path


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray | torch.Tensor):
        return _to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Logging: CSV files (always) and TensorBoard (optional)
# ---------------------------------------------------------------------------------------------------------


class RunLogger:
    """Append metrics to ``run_dir/<kind>.csv`` and, optionally, TensorBoard scalars under ``run_dir/tb``.

    Each kind gets its own CSV file, whose columns are ``step``, the keys of the first row logged to it, then
    ``wall_time`` (seconds since the epoch). Every row is flushed at once, so a crash loses nothing already
    logged. A logger opened on an existing run (a resume) appends to the files and keeps their header.

    Logging is meant for once per episode or per log interval, not once per environment step.

    :param run_dir: The run folder (created if needed).
    :param tensorboard: Also write TensorBoard scalars ``<kind>/<key>``. If TensorBoard cannot be imported,
        a warning is shown and only the CSV files are written.
    :param purge_step: On a resume, the first step logged again: TensorBoard hides the events of earlier
        sessions from this step on, so each step shows once (cut the CSVs with :func:`truncate_logs`).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, purge_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[str]] = {}
        self._writers: dict[str, csv.DictWriter[str]] = {}
        self._columns: dict[str, list[str]] = {}
        self._warned: set[str] = set()
        self._tb: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked for
            except ImportError as e:  # pragma: no cover - tensorboard is a dependency
                warnings.warn(f"TensorBoard logging is off ({e}); CSV logs are still written", stacklevel=2)
            else:
                self._tb = SummaryWriter(
                    log_dir=str(self.run_dir / "tb"), flush_secs=30, purge_step=purge_step
                )

    def _writer(self, kind: str, keys: list[str]) -> csv.DictWriter[str]:
        writer = self._writers.get(kind)
        if writer is not None:
            return writer
        if not re.fullmatch(r"([A-Za-z0-9_.-]+/)?[A-Za-z0-9_.-]+", kind):
            raise ValueError(
                f"invalid log kind {kind!r}: use letters, digits, '_', '-' or '.' (and one '/' for a subfolder)"
            )
        path = self.run_dir / f"{kind}.csv"
        path.parent.mkdir(exist_ok=True)
        columns: list[str] | None = None
        needs_newline = False
        if path.is_file() and path.stat().st_size > 0:
            with path.open(newline="", encoding="utf-8") as f:
                columns = next(csv.reader(f), None)
            needs_newline = not path.read_bytes().endswith(b"\n")
        if columns:
            f = path.open("a", newline="", encoding="utf-8")
            if needs_newline:  # the previous process died in the middle of a row
                f.write("\r\n")
            writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        else:
            columns = ["step", *[k for k in keys if k not in ("step", "wall_time")], "wall_time"]
            f = path.open("w", newline="", encoding="utf-8")
            writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
            writer.writeheader()
            f.flush()
        self._files[kind], self._writers[kind], self._columns[kind] = f, writer, columns
        return writer

    def log(
        self,
        kind: str,
        step: int,
        values: Mapping[str, float],
        tensorboard: bool = True,
        keep_open: bool = True,
    ) -> None:
        """Append one row to ``<kind>.csv`` (and TensorBoard).

        :param kind: Which file: ``"episodes"``, ``"train"``, ``"eval"``... (``"agents/agent_0000"``: a
            file in a subfolder, created if needed).
        :param step: Environment step of the row.
        :param values: Metric name -> number. Keys absent from the file's header (set by its first row) are
            left out of the CSV with a warning, but still go to TensorBoard.
        :param tensorboard: ``False``: the CSV only (a population's per-agent rows, too many for plots).
        :param keep_open: ``False``: close the file after the row (a population's thousands of per-agent
            files would exceed the open-file limit); the next row opens it again.
        """
        writer = self._writer(kind, list(values))
        extra = [k for k in values if k not in self._columns[kind]]
        if extra and kind not in self._warned:
            self._warned.add(kind)
            msg = f"{kind}.csv has no column for {extra}; these values only go to TensorBoard"
            warnings.warn(msg, stacklevel=2)
        now = time.time()
        row: dict[str, Any] = {k: _number(v) for k, v in values.items()}
        row["step"] = int(step)
        row["wall_time"] = round(now, 3)
        writer.writerow(row)
        self._files[kind].flush()
        if not keep_open:
            self._files.pop(kind).close()
            del self._writers[kind], self._columns[kind]
        if self._tb is not None and tensorboard:
            for key, value in values.items():
                self._tb.add_scalar(f"{kind}/{key}", float(value), global_step=int(step), walltime=now)

    def flush(self) -> None:
        """Push everything to disk (CSV rows are already flushed; this also flushes TensorBoard)."""
        for f in self._files.values():
            f.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Close the files (idempotent)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._writers.clear()
        self._columns.clear()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _number(value: Any) -> Any:
    """A CSV-friendly number (numpy and torch scalars become Python ones)."""
    if isinstance(value, torch.Tensor | np.generic):
        return value.item()
    return value


def read_csv(run_dir: str | Path, kind: str) -> dict[str, np.ndarray]:
    """Read ``run_dir/<kind>.csv`` into one float array per column (empty cells become NaN).

    :param run_dir: The run folder.
    :param kind: Which file: ``"episodes"``, ``"train"``, ``"eval"``...
    :return: Column name -> values (``step`` included).
    """
    path = Path(run_dir) / f"{kind}.csv"
    if not path.is_file():
        raise QiterError(f"no {kind} log in {Path(run_dir)} ({path.name} is missing)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if not header:
            raise QiterError(f"{path} is empty")
        rows = [r for r in reader if len(r) == len(header)]  # a torn last row (crash) is skipped

    def to_float(cell: str) -> float:
        try:
            return float(cell) if cell != "" else math.nan
        except ValueError:
            return math.nan

    return {name: np.array([to_float(r[i]) for r in rows], dtype=np.float64) for i, name in enumerate(header)}


# ---------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------


def _weights_only_safe(value: Any, where: str = "state") -> Any:
    """Convert a checkpoint state to what ``torch.load(weights_only=True)`` accepts.

    numpy arrays become tensors, numpy scalars Python numbers, numpy generators their ``bit_generator.state``
    (a dict of str/int), paths strings; anything else that is not a tensor, number, string, bool, None,
    list, tuple or dict is refused (before anything is written).
    """
    if isinstance(value, np.generic):  # before the float check: np.float64 subclasses float
        return value.item()
    if value is None or isinstance(value, bool | int | float | str | torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value).copy())
    if isinstance(value, np.random.Generator):
        return value.bit_generator.state
    if isinstance(value, np.random.BitGenerator):
        return value.state
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {k: _weights_only_safe(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list):
        return [_weights_only_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return tuple(_weights_only_safe(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(
        f"checkpoint {where} is a {type(value).__name__}, which torch.load(weights_only=True) cannot "
        "read back; store tensors, numbers, strings, lists, dicts or None"
    )


def load_module(
    module: torch.nn.Module | torch.optim.Optimizer, saved: Mapping[str, Any], shape_keys: str
) -> None:
    """Restore a network or an optimizer from its ``state_dict()`` in a checkpoint.

    A network of another architecture is refused with one line naming the config keys that fix it. The
    weights are copied in place, so views of them (the numpy fast path's) stay valid.

    :param module: The network or optimizer to restore.
    :param saved: Its saved ``state_dict()``.
    :param shape_keys: The config keys that fix the network's shape, for the message (``"hidden_sizes"``).
    :raises QiterError: The saved network has other tensors or shapes.
    """
    if isinstance(module, torch.optim.Optimizer):
        module.load_state_dict(dict(saved))
        return
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in saved.items()}
    if expected != found:
        raise QiterError(
            f"the checkpoint's network does not match the config (check {shape_keys}): checkpoint {found}, "
            f"config {expected}"
        )
    module.load_state_dict(dict(saved))


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Save a checkpoint atomically.

    The state is written with ``torch.save`` to a temporary file in the same folder, flushed and synced to
    disk, then renamed over ``path`` (``os.replace``). A crash at any moment leaves either the previous file
    or the new one under ``path``, never a truncated one. A ``"format"`` key is added if missing; numpy
    arrays and generators are converted so :func:`load_checkpoint` can read the file with
    ``weights_only=True``.

    :param path: Destination file (its folder is created if needed).
    :param state: Tensors, numbers, strings, lists, dicts, None (numpy values are converted).
    """
    path = Path(path)
    safe = _weights_only_safe(dict(state))
    safe.setdefault("format", CHECKPOINT_FORMAT)
    if not str(safe["format"]).startswith(CHECKPOINT_PREFIX):
        raise ValueError(
            f"a checkpoint's format must start with {CHECKPOINT_PREFIX!r}, got {safe['format']!r}"
        )
    _atomic_write(path, lambda f: torch.save(safe, f))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors on the CPU).

    Uses ``torch.load(..., weights_only=True)``: a checkpoint cannot run code when loaded.

    :raises QiterError: The file is missing, corrupt, or not a qiter checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise QiterError(f"checkpoint {path} does not exist")
    try:
        # Opened first so that a permission problem is reported as one, not as a corrupt file.
        with path.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise QiterError(f"checkpoint {path} cannot be read: {e.strerror or e}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            raise QiterError(
                f"{path} is not a readable qiter checkpoint: it holds Python objects other than tensors and "
                "plain data, which are not loaded for safety (a qiter checkpoint never does)"
            ) from None
        # torch's message does not help here: it blames weights_only and advises an unsafe reload without
        # it, or reports a truncated archive as "[Errno 22] Invalid argument". Say what is wrong instead.
        if path.stat().st_size == 0:
            damage = "the file is empty"
        elif not zipfile.is_zipfile(path):
            damage = "not a complete torch.save archive"
        else:
            damage = "the archive's contents are damaged"
        raise QiterError(
            f"{path} is not a readable qiter checkpoint: corrupt or truncated ({damage})"
        ) from None
    # Each algorithm names its own format (``qiter-dqn-v2``...); its agent checks the version it reads.
    if not isinstance(state, dict) or not str(state.get("format", "")).startswith(CHECKPOINT_PREFIX):
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise QiterError(f"{path} is not a qiter checkpoint (its format is {found!r})")
    return state


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint a path names: the file itself, a run folder's latest checkpoint, or a population
    folder's ``best.pt`` (``qiter population --save-best``).

    :raises QiterError: The path does not exist, or the folder holds no checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise QiterError(f"{path} does not exist")
    if path.is_dir():
        # A population folder's best agent lies beside its own checkpoints (a whole population's).
        if (path / POPULATION_BEST).is_file():
            return path / POPULATION_BEST
        found = latest_checkpoint(path)
        if found is None:
            raise QiterError(f"no checkpoint found in {path / CHECKPOINT_DIR}")
        return found
    return path


def check_checkpoint_of_run(run_dir: str | Path, checkpoint: str | Path, state: Mapping[str, Any]) -> None:
    """Refuse a checkpoint that does not belong to the run in ``run_dir`` (one copied in from another run):
    its config must be for the environment of ``run_dir/config.yaml`` and know every key of it.

    :param run_dir: The run folder.
    :param checkpoint: The checkpoint found in it (for the message).
    :param state: The checkpoint's contents (:func:`load_checkpoint`).
    :raises QiterError: Naming the checkpoint's algorithm and environment and the run's.
    """
    if Path(checkpoint).parent != Path(run_dir) / CHECKPOINT_DIR:
        return  # a population folder's best.pt: its config.yaml is the population's, not a run's
    config_path = Path(run_dir) / CONFIG_FILE
    saved = state.get("config")
    if not config_path.is_file() or not isinstance(saved, Mapping):
        return
    run_config = read_yaml_mapping(config_path)
    env_id, checkpoint_env = run_config.get("env_id"), saved.get("env_id")
    foreign_keys = sorted(set(run_config) - set(saved))
    if env_id == checkpoint_env and not foreign_keys:
        return
    differs = (
        f"a run of {env_id}"
        if env_id != checkpoint_env
        else f"another algorithm's run (keys {foreign_keys[:3]})"
    )
    raise QiterError(
        f"{checkpoint} does not belong to the run in {Path(run_dir)}: it is a {state.get('algo', '?')} "
        f"checkpoint of {checkpoint_env}, while {config_path} is {differs}; move the file out of the run "
        "folder (`qiter eval FILE` evaluates it on its own)"
    )


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint to resume from: ``run_dir/checkpoints/latest.pt`` if it exists, else the most recently
    written ``*.pt`` there, else ``None``."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    latest = folder / "latest.pt"
    if latest.is_file():
        return latest
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.glob("*.pt") if p.is_file() and not p.name.startswith(".")]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name))
