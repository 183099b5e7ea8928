"""The ledger's durable store: all SQL of the collector, behind one interface (``base.Store``).

``sqlite:///PATH`` (the embedded default: one collector process) or
``postgresql://USER@HOST:PORT/DB`` (any number of replicas; the ``[postgres]`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from wattledger.collector.store.base import Store, StoreError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(db_url: str) -> bool:
    return db_url.startswith(POSTGRES_SCHEMES)


def open_store(db_url: str, clock: Callable[[], float] = time.time) -> Store:
    """The store of a db URL, its schema created or migrated."""
    if is_postgres(db_url):
        try:
            from wattledger.collector.store.postgres import PostgresStore
        except ImportError as exc:  # psycopg is the [postgres] extra
            raise StoreError(f"the PostgreSQL driver is not installed ({exc.name}): "
                             "pip install 'wattledger[postgres]'") from None
        return PostgresStore(db_url, clock)
    from wattledger.collector.store.sqlite import SqliteStore

    return SqliteStore(db_url, clock)


def redacted(db_url: str) -> str:
    """The URL without its password, for logs and messages."""
    scheme, sep, rest = db_url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return db_url
    userinfo, _, host = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in userinfo else ''}@{host}"
