"""What PostgreSQL's busy sessions are doing during a turn, and on which relation the ones that
wait for a lock wait: sampled every few ms from ``pg_stat_activity`` and ``pg_locks``.

The relation of a lock wait (docs/performance.md section 6, "Cooling models and the per-site
minute row"):

- ``Lock:tuple`` (``Lock:relation``, ``Lock:extend``): the waiting backend's own ungranted lock
  of that type names the relation;
- ``Lock:transactionid``: a backend that finds a row it must update (or lock, as ``INSERT ...
  ON CONFLICT DO UPDATE`` does) held by an open transaction first takes the heavyweight
  ``tuple`` lock on that row and then waits for the holder's transaction id (heapam's
  ``heap_acquire_tuplock`` before ``XactLockTableWait``); the ``tuple`` lock it holds names the
  relation. Later waiters for the same row queue on that tuple lock (``Lock:tuple``);
- a wait without a tuple lock (an insert that found the same key inserted by a transaction not
  yet committed: the unique index's check waits for it): the table the waiting statement
  writes (``INSERT INTO t``, ``UPDATE t``, ``DELETE FROM t``), marked ``(statement)``.

pg_locks is read only in samples that have a lock waiter (a gated subquery): reading it takes
every lock-manager partition's lock, which the workload's own transactions need.
"""

from __future__ import annotations

import re
import threading

import psycopg

#: one sample: each busy client backend's wait (NULL: on the CPU) and, for a lock wait, the
#: relation its tuple lock (or ungranted relation lock) names and its statement
SAMPLE = """
WITH busy AS MATERIALIZED (
    SELECT pid, wait_event_type, wait_event, query FROM pg_stat_activity
    WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
      AND datname = current_database()),
locks AS MATERIALIZED (
    SELECT pid, relation, granted FROM pg_locks
    WHERE locktype IN ('tuple', 'relation', 'extend', 'page') AND relation IS NOT NULL
      AND (locktype = 'tuple' OR NOT granted)
      AND EXISTS (SELECT 1 FROM busy WHERE wait_event_type = 'Lock'))
SELECT b.wait_event_type, b.wait_event,
       (SELECT l.relation::regclass::text FROM locks l WHERE l.pid = b.pid
        ORDER BY l.granted LIMIT 1),
       CASE WHEN b.wait_event_type = 'Lock' THEN b.query END
FROM busy b
"""

#: the table a statement writes (an upsert's "DO UPDATE" and a "FOR UPDATE" are no UPDATE of their own)
_WRITES = re.compile(r"\b(?:INSERT\s+INTO|(?<!DO )(?<!FOR )(?<!KEY )UPDATE|DELETE\s+FROM)\s+([\w.\"]+)",
                     re.IGNORECASE)
_LOCKS_ROWS = re.compile(r"\bFOR\s+(?:NO\s+KEY\s+)?(?:UPDATE|SHARE|KEY\s+SHARE)\b", re.IGNORECASE)
_FROM = re.compile(r"\bFROM\s+([\w.\"]+)", re.IGNORECASE)


def written_table(statement: str | None) -> str | None:
    """The table a statement writes (INSERT INTO / UPDATE / DELETE FROM) or locks rows of (the
    first FROM of a SELECT ... FOR UPDATE), or None."""
    text = statement or ""
    found = _WRITES.search(text) or (_FROM.search(text) if _LOCKS_ROWS.search(text) else None)
    return found.group(1).strip('"') if found else None


def lock_key(event: str, relation: str | None, statement: str | None) -> tuple[str, str]:
    """(``Lock:transactionid on site_minutes``, how the relation was found: "tuple lock",
    "statement" or "unknown")."""
    if relation is not None:
        return f"{event} on {relation}", "tuple lock"
    table = written_table(statement)
    return (f"{event} on {table}", "statement") if table else (f"{event} on ?", "unknown")


class WaitSampler:
    """Samples one database's busy sessions every ``period`` s until ``stop``: the share of
    samples per wait event ("CPU" when none), per lock wait and relation, and the WAL written
    and the write transactions committed (or rolled back) meanwhile."""

    def __init__(self, url: str, period: float = 0.005) -> None:
        self._conn = psycopg.connect(url, autocommit=True)
        self._period = period
        self.events: dict[str, int] = {}
        self.locks: dict[str, int] = {}
        self.found_by: dict[str, int] = {}  # lock samples per way their relation was found
        self.samples = 0  # busy sessions seen, over all samples: the shares' denominator
        self._wal_start, self._xid_start = self._wal(), self._next_xid()
        self.wal_bytes = 0  # written during the turn (set by stop)
        self.transactions = 0  # write transactions during the turn (set by stop)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _wal(self) -> int:
        """The server's WAL position, in bytes (every database's writes: only this run's here)."""
        row = self._conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()
        return int(row[0]) if row else 0

    def _next_xid(self) -> int:
        """The server's next transaction id: one is given to each transaction that writes (and
        to no read-only one, such as the replicas' view loads), in every database."""
        row = self._conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").fetchone()
        return int(row[0]) if row else 0

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            for kind, event, relation, statement in self._conn.execute(SAMPLE):
                key = "CPU" if kind is None else f"{kind}:{event}"
                self.events[key] = self.events.get(key, 0) + 1
                self.samples += 1
                if kind == "Lock":
                    where, how = lock_key(key, relation, statement)
                    self.locks[where] = self.locks.get(where, 0) + 1
                    self.found_by[how] = self.found_by.get(how, 0) + 1

    def stop(self) -> tuple[dict[str, float], dict[str, float]]:
        """The shares of the busy samples: per wait event, and per lock wait and relation."""
        self._stop.set()
        self._thread.join()
        self.wal_bytes = self._wal() - self._wal_start
        self.transactions = self._next_xid() - self._xid_start
        self._conn.close()
        total = self.samples or 1
        return ({k: v / total for k, v in self.events.items()}, {k: v / total for k, v in self.locks.items()})


def shares_line(shares: dict[str, list[float]], turns: int, top: int = 6) -> str:
    """``a 31%, b 5%``: each key's mean share over ``turns`` (0 in a turn it was not seen), largest first."""
    means = sorted(((sum(v) / turns, k) for k, v in shares.items()), reverse=True)[:top]
    return ", ".join(f"{k} {v:.0%}" if v >= 0.005 else f"{k} <1%" for v, k in means) or "none"
