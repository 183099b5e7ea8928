"""`wattledger collector`: serve the ledger over HTTP (docs/collector.md)."""

from __future__ import annotations

import argparse
import fcntl
import io
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from wattledger import config, tuning
from wattledger.collector import settings as collector_settings

HELP = "run the central collector: authenticated ingest, ledger of energy, cost, carbon and plan"
log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    collector_settings.add_flags(parser)
    parser.add_argument("--hash-token", metavar="NODE", default=None,
                        help="print a tokens_file line for NODE and exit: the token piped to stdin is "
                             "hashed; with a terminal or an empty stdin a new random token is made and "
                             "printed once")


def run(args: argparse.Namespace) -> int:
    if args.hash_token is not None:
        return hash_token(args.hash_token)
    refuse_removed_environment()
    settings = collector_settings.load_settings(args)
    # APScheduler logs every run at INFO; its warnings (missed runs) are what an operator needs
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    if settings.tls_cert is not None and settings.tls_key is not None:
        check_tls(settings.tls_cert, settings.tls_key)
    from wattledger.collector.store import redacted

    shown_db = redacted(settings.db)
    prepare_db_dir(settings.db)
    ledger_lock = lock_ledger(settings.db)  # held until this process ends (SQLite only)
    try:
        sock = bind(settings.listen)
    except config.ConfigError:
        ledger_lock.close()
        raise
    # imported here so that `--help` and config errors do not load the web stack
    import uvicorn

    from wattledger.collector.api.app import create_app, open_ledger
    from wattledger.collector.api.server import http_limits, uvicorn_config

    try:
        ledger = open_ledger(settings)
    except Exception as exc:  # a database that cannot be opened is the operator's to fix: one line
        sock.close()
        ledger_lock.close()
        log.debug("opening the ledger failed", exc_info=True)
        raise config.ConfigError(f"db {shown_db}: cannot be opened: {exc}") from None
    tuning.tune_threads()
    try:
        app = create_app(settings, ledger=ledger)
        scheme = "https" if settings.tls else "http"
        log.info("collector: serving %s://%s (db %s, replica %s, sites %s, %d plan entries)", scheme,
                 settings.listen, shown_db, settings.replica_name, ",".join(settings.sites),
                 len(settings.plan))
        # header/body timeouts, header limits and JSON refusals: wattledger.collector.api.server
        server = uvicorn.Server(uvicorn_config(
            app, http_limits(settings), on_refusal=app.state.service_stats.refused,  # type: ignore[attr-defined]
            ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key,
            log_level=logging.getLogger().getEffectiveLevel(),
        ))
        # uvicorn stops on SIGTERM, then re-raises it to the handler it found: a quiet one here,
        # so that a stop asked for by systemd or Kubernetes ends with status 0
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
        try:
            tuning.tune_gc()
            server.run(sockets=[sock])
        finally:
            signal.signal(signal.SIGTERM, previous)
    finally:
        sock.close()
        ledger.close()
        ledger_lock.close()
    log.info("collector: stopped")
    return 0 if server.started else 1


#: environment variables of earlier versions that are gone, and what to do instead
REMOVED_ENVIRONMENT = {"WATTLEDGER_INGEST_WORKERS": collector_settings.REMOVED["ingest_workers"]}


def refuse_removed_environment(env: Mapping[str, str] = os.environ) -> None:
    for name, why_gone in REMOVED_ENVIRONMENT.items():
        if env.get(name):
            raise config.ConfigError(f"{name}: {why_gone}")


def bind(listen: config.HostPort) -> socket.socket:
    """The listening socket, made here so that a port in use is one clear line (exit 2)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.host, listen.port))
    except OSError as exc:
        sock.close()
        raise config.ConfigError(f"cannot listen on {listen}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


def check_tls(cert: Path, key: Path) -> None:
    """Load the certificate and key as uvicorn will, so that a bad pair is one line (exit 2)."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise config.ConfigError(f"tls_cert {str(cert)!r} / tls_key {str(key)!r} cannot be used: "
                                 f"{getattr(exc, 'reason', None) or exc}") from None


def lock_ledger(db_url: str) -> IO[str]:
    """Hold ``<db>.lock`` exclusively for the life of this process, or refuse to start.

    The ledger's dedupe and each device's last reading live in the process as well as in the
    file: two collectors on one SQLite ledger would each accept a batch the other committed and
    bridge intervals the other has already counted (double counting). A sidecar file, not the
    database itself: closing any descriptor of the database would drop SQLite's own locks."""
    db_file = sqlite_file(db_url)
    if db_file is None:
        return io.StringIO()
    lock_path = Path(f"{db_file}.lock")
    try:
        handle = lock_path.open("a+", encoding="utf-8")
    except OSError as exc:
        raise config.ConfigError(f"db {db_url}: cannot open {str(lock_path)!r}: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise config.ConfigError(
            f"db {db_url}: in use by another collector{f' (pid {holder})' if holder.isdigit() else ''}; "
            "one collector per SQLite ledger (several replicas need a shared PostgreSQL)") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def sqlite_file(db_url: str) -> Path | None:
    """The database file of a (validated) ``sqlite:///`` URL, read as the store reads it
    (absolute, with or without its leading /); None for ``:memory:`` and for PostgreSQL (whose
    replicas share the database: nothing to lock, no folder to make)."""
    from wattledger.collector.store import is_postgres
    from wattledger.collector.store.sqlite import sqlite_path

    if is_postgres(db_url):
        return None
    path = sqlite_path(db_url)
    return None if path == ":memory:" else Path(path)


def prepare_db_dir(db_url: str) -> None:
    """Make the folder of the SQLite database (the default one lives in the state directory)."""
    db_file = sqlite_file(db_url)
    if db_file is None:
        return
    folder = db_file.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise config.ConfigError(f"db {db_url}: cannot make folder {str(folder)!r}: {exc.strerror}") from None


def hash_token(node: str) -> int:
    from wattledger.collector.ingest.auth import hash_line, new_token
    from wattledger.contract import is_node_name

    if not is_node_name(node):
        raise config.ConfigError(f"--hash-token: {node!r} is not a valid node name")
    # A terminal, or a stdin that gives nothing at all (/dev/null, `docker run` without -i, CI,
    # cron, an ssh command without a tty): make a new token, as on a terminal. Blank space is
    # refused instead: it is what `echo "$TOKEN" |` sends when TOKEN is unset, and hashing a
    # token of our own there would hide that mistake.
    raw = "" if sys.stdin.isatty() else _read_stdin()
    if not raw:
        token = new_token()
        print(f"# token for the agent of {node} (its --token-file):")
        print(token)
    else:
        token = raw.strip()
        if not token:
            raise config.ConfigError("--hash-token: stdin held no token, only blank space (give it "
                                     "nothing at all, e.g. </dev/null, for a new token)")
        try:
            token = config.bearer_token(token)
        except ValueError as exc:
            raise config.ConfigError(f"--hash-token: stdin must hold one token: {exc}") from None
    print("# line for the collector's tokens_file:")
    print(hash_line(node, token))
    return 0


def _read_stdin() -> str:
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise config.ConfigError("--hash-token: stdin is not text") from None
