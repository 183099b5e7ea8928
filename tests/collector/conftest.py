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


@pytest.fixture(autouse=True)
def conservation(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test: each ledger it opened (ledgerkit.open_ledger) adds up, teams to sites
    (ledgerkit.check_conservation). A test whose ledger holds usage from before chargeback (an
    upgraded file) is marked ``@pytest.mark.unattributed``."""
    ledgerkit.OPENED.clear()
    yield
    _check_opened(request)


def _check_opened(request: pytest.FixtureRequest) -> None:
    """Check (once) the ledgers the test opened, unless it failed or is marked unattributed."""
    opened, ledgerkit.OPENED[:] = list(ledgerkit.OPENED), []
    if request.node.get_closest_marker("unattributed") is not None:
        return
    report = getattr(request.node, "rep_call", None)
    if report is None or not report.passed:
        return
    for ledger in opened:
        try:
            ledger.store.ping()
        except Exception:  # closed by the test (or its database dropped): nothing to read
            continue
        ledgerkit.check_conservation(ledger)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    if call.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


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
        try:
            _check_opened(request)  # before the backend's ledgers are closed
        finally:
            chosen.close_all()
        ledgerkit.BACKEND = ledgerkit.Backend("sqlite")
        if request.param == "postgresql":
            for url in made:
                server.drop_database(url)
