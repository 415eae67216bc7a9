"""Study databases: checked storage URLs, Optuna storages with a heartbeat, and a sweep's shared run table.

One URL names the database of a study: an SQLite file by default (no set-up, one machine), or a server such
as PostgreSQL (``postgresql+psycopg://user:password@host/dbname``) that several machines share. Optuna keeps
its trials there; a sweep keeps its list of runs in a table of its own (:class:`RunTable`), so every machine
that runs the same sweep command takes runs from the same list and each run is done once.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qiter.errors import QiterError

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

__all__ = [
    "DEFAULT_HEARTBEAT",
    "RunTable",
    "check_url",
    "default_url",
    "make_engine",
    "open_optuna_storage",
    "worker_id",
]

# Seconds between a running trial's (or sweep run's) signs of life; after GRACE_FACTOR of them without one,
# another worker takes it for dead. Optuna's own default grace is twice the interval.
DEFAULT_HEARTBEAT = 30
GRACE_FACTOR = 2
# A server that does not answer within this many seconds is reported, rather than waited on forever.
CONNECT_TIMEOUT = 10
# Attempts at creating tables and the study when workers start at once (Optuna's known race on first use).
CREATE_ATTEMPTS = 5


def default_url(out_dir: str | Path) -> str:
    """The SQLite file ``out_dir/study.db`` as a storage URL."""
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def worker_id() -> str:
    """This process, for the record of who runs what: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def check_url(url: str) -> str:
    """Check a storage URL's form; a bare ``postgresql://`` gets the installed psycopg (v3) driver.

    :param url: A SQLAlchemy database URL.
    :return: The URL to use.
    :raises QiterError: A malformed URL, an unsupported database, or an SQLite file in a missing folder.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise QiterError(
            f"malformed storage URL {url!r}: expected e.g. sqlite:///study.db or "
            "postgresql+psycopg://user:password@host/dbname"
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:"):
            raise QiterError(
                f"storage URL {url!r} names no file: a study needs a database other processes see"
            )
        if not Path(database).parent.is_dir():
            raise QiterError(f"storage URL {url!r}: folder {Path(database).parent} does not exist")
    elif backend not in ("postgresql", "mysql"):
        raise QiterError(f"storage URL {url!r}: unsupported database {backend!r} (use sqlite or postgresql)")
    return parsed.render_as_string(hide_password=False)


def _engine_kwargs(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    if make_url(url).get_backend_name() == "sqlite":
        # Workers write at once: wait for the lock rather than fail at the first "database is locked".
        return {"connect_args": {"timeout": 60}}
    # pool_pre_ping: a connection the server dropped (restart, idle timeout) is replaced, not raised.
    return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}, "pool_pre_ping": True}


def _unreachable(url: str, exc: BaseException) -> QiterError:
    from sqlalchemy.engine import make_url

    safe = make_url(url).render_as_string(hide_password=True)
    lines = str(exc).strip().splitlines()
    return QiterError(f"cannot open storage {safe}: {lines[0] if lines else type(exc).__name__}")


def make_engine(url: str) -> sqlalchemy.Engine:
    """A SQLAlchemy engine for ``url``, checked by connecting once.

    :raises QiterError: A malformed or unreachable URL.
    """
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    url = check_url(url)
    engine = sqlalchemy.create_engine(url, **_engine_kwargs(url))
    try:
        with engine.connect():
            pass
    except (SQLAlchemyError, OSError) as exc:
        engine.dispose()
        raise _unreachable(url, exc) from exc
    return engine


def open_optuna_storage(url: str, heartbeat: int | None = DEFAULT_HEARTBEAT) -> optuna.storages.RDBStorage:
    """An Optuna storage on ``url`` whose running trials send a heartbeat.

    A trial whose worker stopped sending it (a crash, SIGKILL) is marked failed by the next worker that
    starts a trial after ``GRACE_FACTOR * heartbeat`` seconds, so a study never waits on a dead worker.

    :param url: The database URL.
    :param heartbeat: Seconds between heartbeats; ``None`` for none.
    :raises QiterError: A malformed or unreachable URL.
    """
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    url = check_url(url)
    make_engine(url).dispose()  # a clear line now, rather than Optuna's retries and traceback
    grace = None if heartbeat is None else GRACE_FACTOR * heartbeat
    last: BaseException | None = None
    for attempt in range(CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                # Optuna calls the heartbeat experimental; qiter relies on it and tests it.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=_engine_kwargs(url), heartbeat_interval=heartbeat, grace_period=grace
                )
        except (SQLAlchemyError, OSError) as exc:  # two processes creating the tables at once
            last = exc
            time.sleep(0.2 * (attempt + 1))
    assert last is not None
    raise _unreachable(url, last) from last


def _dead_here(owner: str) -> bool:
    """Whether ``owner`` (``host:pid``) is a process of this machine that no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's
        return False
    return False


class RunTable:
    """A sweep's runs in a database table, claimed one at a time so each is done once across machines.

    Each row is ``(sweep, key, status, owner, heartbeat)`` with status ``pending``, ``running`` or ``done``.
    A claim is one conditional ``UPDATE`` (atomic in every database): a pending run, or a running one
    whose owner has sent no heartbeat for the grace period (a crashed machine).

    :param url: The database URL.
    :param sweep: The sweep's name (many sweeps can share a database).
    :param grace: Seconds without a heartbeat after which a running run is taken for abandoned.
    """

    TABLE = "qiter_sweep_runs"

    def __init__(self, url: str, sweep: str, grace: float = GRACE_FACTOR * DEFAULT_HEARTBEAT) -> None:
        import sqlalchemy as sa

        self.engine = make_engine(url)
        self.sweep, self.grace, self.owner = sweep, grace, worker_id()
        metadata = sa.MetaData()
        self.table = sa.Table(
            self.TABLE,
            metadata,
            sa.Column("sweep", sa.String(255), primary_key=True),
            sa.Column("key", sa.String(512), primary_key=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("owner", sa.String(255)),
            sa.Column("heartbeat", sa.Float),
        )
        for attempt in range(CREATE_ATTEMPTS):
            try:
                metadata.create_all(self.engine)  # checks first; a racing creator is retried below
                break
            except sa.exc.SQLAlchemyError:
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def add(self, keys: list[str]) -> None:
        """Register runs (those already registered by another worker are kept as they are)."""
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            known = set(conn.scalars(sa.select(self.table.c.key).where(self.table.c.sweep == self.sweep)))
        for key in keys:
            if key in known:
                continue
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.insert(self.table).values(sweep=self.sweep, key=key, status="pending"))
            except sa.exc.IntegrityError:
                pass  # another worker registered it first

    def claim(self, key: str) -> bool:
        """Take run ``key`` for this worker; ``False`` when it is done or another live worker has it."""
        import sqlalchemy as sa

        now = time.time()
        c = self.table.c
        stale = sa.and_(c.status == "running", c.heartbeat < now - self.grace)
        mine = sa.and_(c.status == "running", c.owner == self.owner)
        query = (
            sa.update(self.table)
            .where(c.sweep == self.sweep, c.key == key, sa.or_(c.status == "pending", stale, mine))
            .values(status="running", owner=self.owner, heartbeat=now)
        )
        with self.engine.begin() as conn:
            if conn.execute(query).rowcount == 1:
                return True
            owner = conn.scalar(
                sa.select(c.owner).where(c.sweep == self.sweep, c.key == key, c.status == "running")
            )
            if owner is None or not _dead_here(owner):
                return False
            # Its owner was a process of this machine that is gone (a sweep killed and started again at
            # once): no need to wait for the grace period.
            taken = (
                sa.update(self.table)
                .where(c.sweep == self.sweep, c.key == key, c.status == "running", c.owner == owner)
                .values(status="running", owner=self.owner, heartbeat=now)
            )
            return conn.execute(taken).rowcount == 1

    def beat(self, key: str) -> None:
        """Say that this worker still runs ``key``."""
        self._set(key, "running")

    def finish(self, key: str) -> None:
        """Mark ``key`` done."""
        self._set(key, "done")

    def release(self, key: str) -> None:
        """Give ``key`` back (an interrupted run): any worker may take it again."""
        self._set(key, "pending")

    def _set(self, key: str, status: str) -> None:
        import sqlalchemy as sa

        c = self.table.c
        query = (
            sa.update(self.table)
            .where(c.sweep == self.sweep, c.key == key, c.owner == self.owner)
            .values(status=status, heartbeat=time.time())
        )
        with self.engine.begin() as conn:
            conn.execute(query)

    def statuses(self) -> dict[str, tuple[str, str | None]]:
        """Every run of the sweep: key -> (status, owner)."""
        import sqlalchemy as sa

        c = self.table.c
        with self.engine.begin() as conn:
            rows = conn.execute(sa.select(c.key, c.status, c.owner).where(c.sweep == self.sweep)).all()
        return {key: (status, owner) for key, status, owner in rows}

    def close(self) -> None:
        self.engine.dispose()
