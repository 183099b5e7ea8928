"""Fixtures of the collector tests: the store backend a ledger test runs on."""

from __future__ import annotations

from collections.abc import Iterator

import ledgerkit
import pytest

from tests.pgserver import PgServer

BACKENDS = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that asks for ``backend`` runs on each backend, or on those its ``backends``
    marker names (``@pytest.mark.backends("postgresql")``)."""
    if "backend" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend", marker.args if marker else BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> Iterator[ledgerkit.Backend]:
    """The store a ledger test runs on: SQLite, or a database of the session's PostgreSQL."""
    if request.param == "sqlite":
        chosen = ledgerkit.Backend("sqlite")
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        template: str = request.getfixturevalue("pg_template")
        made: list[str] = []

        def new_database() -> str:
            made.append(server.new_database(template))
            return made[-1]

        chosen = ledgerkit.Backend("postgresql", new_database)
    ledgerkit.BACKEND = chosen
    try:
        yield chosen
    finally:
        chosen.close_all()
        ledgerkit.BACKEND = ledgerkit.Backend("sqlite")
        if request.param == "postgresql":
            for url in made:
                server.drop_database(url)
