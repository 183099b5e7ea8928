"""A read-only connection to a ledger, for ``wattledger plan --config``: the plan reads the
statistics a running collector keeps, without opening the ledger as a store (no migration, no
cache, no lock: the collector may be writing meanwhile, and the planner may be on a laptop with a
copy of the file).

SQLite opens the file with ``mode=ro``; PostgreSQL with ``default_transaction_read_only``. A
ledger older than the plan's statistics (``plan_days``) says so in one line: start this
version's collector on it once (it migrates the schema), and let it ingest.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wattledger.collector.store import is_postgres, redacted, sql
from wattledger.collector.store.base import Row, StoreError
from wattledger.collector.store.sqlite import sqlite_path

_HAS_PLAN = "SELECT 1 FROM plan_days LIMIT 1"
_UPGRADE = ("keeps no plan statistics yet (its schema is older than this wattledger's): start this "
            "version's collector on it once to migrate it, and plan from what it ingests after")


class LedgerReader(sql.PlanQueries):
    """``PlanReads`` over a read-only connection; ``close`` it when done."""

    def __init__(self, db_url: str) -> None:
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None
        if is_postgres(db_url):
            self._open_postgres(db_url)
        else:
            self._open_sqlite(db_url)

    def _open_sqlite(self, db_url: str) -> None:
        path = sqlite_path(db_url)
        if path == ":memory:" or not Path(path).is_file():
            raise StoreError(f"no ledger at {path!r} (config key db)")
        try:
            self._sqlite = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, check_same_thread=False)
            self._sqlite.execute("PRAGMA query_only = ON")
            self._sqlite.execute(_HAS_PLAN).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise StoreError(f"the ledger at {path!r} {_UPGRADE}") from None
            raise StoreError(f"cannot read the ledger at {path!r}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot read the ledger at {path!r}: {exc}") from None

    def _open_postgres(self, db_url: str) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError(f"the PostgreSQL driver is not installed ({exc.name}): "
                             "pip install 'wattledger[postgres]'") from None
        try:
            self._pg = psycopg.connect(db_url, autocommit=True, connect_timeout=10,
                                       options="-c default_transaction_read_only=on",
                                       application_name="wattledger-plan")
            self._pg.execute(_HAS_PLAN).fetchall()
        except psycopg.errors.UndefinedTable:
            raise StoreError(f"the ledger at {redacted(db_url)} {_UPGRADE}") from None
        except psycopg.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"cannot read the ledger at {redacted(db_url)}: {first}") from None

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[Row]:
        """Rows of one statement written with ``?`` placeholders."""
        if self._sqlite is not None:
            return self._sqlite.execute(statement, params).fetchall()
        rows: list[Row] = self._pg.execute(statement.replace("?", "%s"), params).fetchall()
        return rows

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
        if self._pg is not None:
            self._pg.close()
