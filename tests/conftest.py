"""Suite-wide settings and the session's PostgreSQL.

Under CI (``CI`` set, as ``.ci/run`` is run), Hypothesis draws the same examples on every run
(``derandomize``): a property test then explores as widely as ever, but a submission's result
does not depend on the luck of one draw. Locally it keeps drawing fresh examples, which is
where new counter-examples are found.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """ONE real PostgreSQL for the whole session (tests/pgserver.py), on a free loopback port.
    Skipped without the server binaries, except under CI, where that fails."""
    from tests.pgserver import PgServer, require_server_binaries

    require_server_binaries()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed (pip install 'wattledger[postgres]')")
    server = PgServer().start()  # its own folder: pytest's are closed to the postgres user
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def pg_template(pg_server: object) -> str:
    """A database migrated once by the collector's store: each test's database is a copy of it."""
    from tests.pgserver import PgServer
    from wattledger.collector.store.postgres import PostgresStore

    assert isinstance(pg_server, PgServer)
    url = pg_server.new_database(prefix="template")
    PostgresStore(url).close()
    name = url.rsplit("/", 1)[1]
    pg_server.sql(f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true')
    return name
