"""The collector's configuration, validated once at start (DESIGN.md, "Collector configuration").

Scalar settings come from a flag, the environment (``WATTLEDGER_<FLAG>``) or the ``--config``
YAML, in that order (``wattledger.config.resolve``); the structured ones (``tokens``, ``sites``,
``plan``) from the YAML only. The merged values are checked by :class:`CollectorSettings`
(pydantic, unknown keys refused) and every problem becomes ONE line naming the key, e.g.
``config key sites.default.timezone: unknown timezone 'Mars/Olympus'``, which the CLI prints
before it exits with status 2. docs/collector.md lists every key.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from wattledger import config
from wattledger.collector.ingest.auth import read_tokens_file, token_digest
from wattledger.collector.sites import (
    CLOCK_TIME_PATTERN,
    CURRENCY_PATTERN,
    PlanEntry,
    SiteConfig,
    Sites,
    check_plan,
)
from wattledger.collector.teams import TeamRules
from wattledger.contract import LABEL_VALUE_MAX_LENGTH
from wattledger.wire import NodeName, plain_file_reason

MIB = 1 << 20
DEFAULT_LISTEN = "0.0.0.0:9861"
#: the site a node without a ``site`` label belongs to, made when ``sites`` is not configured
DEFAULT_SITE: dict[str, Any] = {"timezone": "UTC", "currency": "USD", "pue": 1.5, "price_per_kwh": 0.12,
                "demand_charge_per_kw": 0.0, "carbon_g_per_kwh": 400.0}


def default_db_url() -> str:
    return f"sqlite:///{config.default_state_dir() / 'ledger.db'}"


def _converted(convert: Callable[[object], Any]) -> BeforeValidator:
    """Run a wattledger.config value type on raw input (a string from YAML or a test)."""
    def run(value: Any) -> Any:
        return value if isinstance(value, config.HostPort | Path) else convert(value)
    return BeforeValidator(run)


def db_url(raw: object) -> str:
    """``sqlite:///PATH`` (one collector) or ``postgresql://USER@HOST:PORT/DB`` (replicas)."""
    text = str(raw).strip()
    if text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    if text.startswith(("postgresql://", "postgres://")) and "/" in text.split("://", 1)[1]:
        return text
    # no echo of the value: a PostgreSQL URL may hold a password
    raise ValueError("must be sqlite:///PATH or postgresql://USER@HOST:PORT/DATABASE")


BearerToken = Annotated[str, BeforeValidator(lambda raw: config.bearer_token(str(raw)))]


class RemoteWriteToken(BaseModel):
    """One Prometheus allowed to POST /api/v1/write: its token (in clear, or its SHA-256 as
    ``token_sha256``, the digest ``wattledger collector --hash-token`` prints after ``sha256:``)
    and the site (and cluster) its samples are booked to (docs/remote-write.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: BearerToken | None = None
    token_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    site: Annotated[str, Field(min_length=1)]
    cluster: Annotated[str, Field(max_length=LABEL_VALUE_MAX_LENGTH)] = ""

    @model_validator(mode="after")
    def _one_token(self) -> RemoteWriteToken:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("[token] give token or token_sha256, one of them")
        return self

    def digest(self) -> bytes:
        return bytes.fromhex(self.token_sha256) if self.token_sha256 is not None else token_digest(
            str(self.token))


#: keys of earlier versions that are gone, and what to do instead
REPLICA_PATTERN = r"^[^\s\"\\]+$"
#: the configuration's own patterns in words (the wire's are in contract.PATTERN_WORDS)
CONFIG_PATTERNS = {
    CLOCK_TIME_PATTERN: "a time of day written HH:MM, from 00:00 to 24:00",
    CURRENCY_PATTERN: "a three-letter ISO 4217 currency code such as USD, EUR or JPY",
    REPLICA_PATTERN: "a name without spaces, quotes or backslashes",
}
REMOVED = {"ingest_workers": "removed: run replicas on PostgreSQL (docs/collector.md, \"Replicas\")"}


class CollectorSettings(BaseModel):
    """Everything `wattledger collector` needs, checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    listen: Annotated[config.HostPort, _converted(config.host_port)] = config.host_port(DEFAULT_LISTEN)
    db: Annotated[str, BeforeValidator(db_url)] = Field(default_factory=default_db_url)
    #: tokens travel in an HTTP header: printable ASCII without spaces (as the agent's --token-file)
    tokens: dict[NodeName, BearerToken] = {}
    tokens_file: Annotated[Path, _converted(config.existing_file)] | None = None
    allow_unauthenticated: bool = False
    #: POST /api/v1/write: NAME -> {token, site, cluster} (one per Prometheus; docs/remote-write.md)
    remote_write_tokens: dict[NodeName, RemoteWriteToken] = {}
    sites: Sites = Field(default_factory=lambda: {"default": SiteConfig(name="default", **DEFAULT_SITE)})
    plan: list[PlanEntry] = []
    #: allocations' teams (docs/chargeback.md, "Teams")
    teams: TeamRules = {}
    # bounded: a bridged gap is priced minute by minute
    max_gap_seconds: Annotated[float, Field(gt=0, le=86400, allow_inf_nan=False)] = 30.0
    stale_after_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 120.0
    refresh_interval_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 15.0
    #: on PostgreSQL, how old the fleet view of /metrics and /v1/nodes may be (this replica's own
    #: commits are always in it); SQLite reads the one writer's memory at each request
    metrics_refresh_seconds: Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)] = 5.0
    #: the ``replica`` label of this process's own metric families (default: host:port)
    replica: Annotated[str, Field(min_length=1, max_length=128, pattern=REPLICA_PATTERN)] | None = None
    #: quarter-hours older than this are summed into hours (docs/accounting.md, "Roll-up"); off by default
    rollup_after_days: Annotated[float, Field(ge=2, allow_inf_nan=False)] | None = None
    max_body_bytes: Annotated[int, Field(ge=1024)] = 8 * MIB
    max_queue_batches: Annotated[int, Field(ge=1)] = 1024
    max_pending_bytes: Annotated[int, Field(ge=1024)] = 128 * MIB
    max_group_batches: Annotated[int, Field(ge=1)] = 512
    #: of max_pending_bytes, what the pushes of one node (its token's) may hold at once
    max_node_pending_bytes: Annotated[int, Field(ge=1024)] = 16 * MIB
    #: a request's headers must be complete within this (from the connection's start for its first)
    header_timeout_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 10.0
    #: a body that sends nothing for this long is answered 408 and its connection closed
    body_timeout_seconds: Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)] = 30.0
    #: all header fields of a request together (one field: at most 8 KiB); more -> 431
    max_header_bytes: Annotated[int, Field(ge=8192, le=16 * MIB)] = 64 * 1024
    tls_cert: Annotated[Path, _converted(config.existing_file)] | None = None
    tls_key: Annotated[Path, _converted(config.existing_file)] | None = None

    @model_validator(mode="after")
    def _cross_checks(self) -> CollectorSettings:
        # "[key] " tells describe() which key a cross-check is about (a model check has no loc)
        if not self.sites:
            raise ValueError("[sites] needs at least one site (a node without a site label belongs to "
                             "'default')")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("[tls_key] tls_cert and tls_key go together: give both or neither")
        for name, remote in self.remote_write_tokens.items():
            if remote.site not in self.sites:
                raise ValueError(f"[remote_write_tokens.{name}.site] site {remote.site!r} is not configured "
                                 f"(sites: {', '.join(sorted(self.sites))})")
        try:
            check_plan(self.sites, self.plan)
        except ValueError as exc:
            raise ValueError(f"[plan] {exc}") from None
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def replica_name(self) -> str:
        """``replica``, else this host's name and port (the listen address when it names one)."""
        if self.replica is not None:
            return self.replica
        host = self.listen.host
        if host in ("", "0.0.0.0", "::", "[::]"):
            host = socket.gethostname()
        return f"{host}:{self.listen.port}"

    def check_remote_write_tokens(self) -> None:
        """ValueError when a Prometheus's token is another's or an agent's: a token names one
        caller, so that what it may write is decided by the token alone."""
        agents = {token_digest(t) for t in self.tokens.values()} | set(self.hashed_tokens().values())
        seen: dict[bytes, str] = {}
        for name, remote in self.remote_write_tokens.items():
            digest = remote.digest()
            if digest in agents:
                raise ValueError(f"{name}: its token is also an agent's (tokens, tokens_file)")
            if digest in seen:
                raise ValueError(f"{seen[digest]} and {name} share one token")
            seen[digest] = name

    def hashed_tokens(self) -> dict[str, bytes]:
        """The tokens_file's node -> SHA-256 digest (read again at each call)."""
        return read_tokens_file(self.tokens_file) if self.tokens_file is not None else {}


# ---------------------------------------------------------------------------- flags

OPTIONS: tuple[config.Option, ...] = (
    config.Option("--listen", config.host_port, None, "address to serve on", metavar="HOST:PORT"),
    config.Option("--db", db_url, None, "ledger database URL (default: sqlite:///<state dir>/ledger.db)",
                  metavar="URL"),
    config.Option("--tokens-file", config.existing_file, None,
                  "file of hashed agent tokens, lines NODE:sha256:HEX (see --hash-token)", metavar="FILE"),
    config.Option("--allow-unauthenticated", config.boolean, None,
                  "accept pushes without a token (true/false; default false)", metavar="BOOL"),
    config.Option("--max-body-bytes", config.positive_int, None,
                  f"largest push body, before and after gzip (default {8 * MIB})", metavar="BYTES"),
    config.Option("--max-gap-seconds", config.positive_float, None,
                  "power-only readings further apart are not bridged (default 30)", metavar="SECONDS"),
    config.Option("--metrics-refresh-seconds", config.positive_float, None,
                  "PostgreSQL: how old the fleet view of /metrics and /v1/nodes may be (default 5)",
                  metavar="SECONDS"),
    config.Option("--replica", config.text, None,
                  "the replica label of this process's own metrics (default HOST:PORT)", metavar="NAME"),
    config.Option("--stale-after-seconds", config.positive_float, None,
                  "a node unheard for this long is stale (default 120)", metavar="SECONDS"),
    config.Option("--tls-cert", config.existing_file, None,
                  "TLS certificate (PEM); serves HTTPS with --tls-key", metavar="FILE"),
    config.Option("--tls-key", config.existing_file, None, "TLS private key (PEM)", metavar="FILE"),
)


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="YAML configuration file [env WATTLEDGER_CONFIG]")
    config.add_options(parser, OPTIONS)


def load_settings(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> CollectorSettings:
    """Flags > environment > YAML > defaults, validated; any problem is one ConfigError line."""
    env = os.environ if env is None else env
    # unknown keys are named by the settings model (extra="forbid"), with their whole path
    file_values = config.config_file_values(args, env)
    file_values.pop("log_level", None)  # read by the dispatcher (wattledger.cli.log_level)
    given = config.resolve(OPTIONS, args, file_values, env)
    merged = {**file_values, **{key: value for key, value in given.items() if value is not None}}
    return settings_from(merged, file_values if isinstance(file_values, config.YamlDoc) else None)


def settings_from(values: Mapping[str, Any], doc: config.YamlDoc | None = None) -> CollectorSettings:
    """Validate a mapping of configuration keys; ConfigError (one line, with the key's line in
    ``doc``, the file, when it came from there) when it is wrong."""
    for key, why_gone in REMOVED.items():
        if key in values:
            raise config.ConfigError(f"config key {key}: {why_gone}")
    try:
        settings = CollectorSettings.model_validate(dict(values))
    except ValidationError as exc:
        raise config.ConfigError(describe(exc, doc)) from None
    try:
        settings.hashed_tokens()
    except ValueError as exc:
        raise config.ConfigError(f"config key tokens_file: {exc}") from None
    try:
        settings.check_remote_write_tokens()
    except ValueError as exc:
        raise config.ConfigError(f"config key remote_write_tokens: {exc}") from None
    return settings


def describe(exc: ValidationError, doc: config.YamlDoc | None = None) -> str:
    """The first pydantic error as ``config key a.b.c: reason`` (plus how many more there are),
    in plain words: no regex, no pydantic wording, list entries counted from 1 in the reason
    (the key's path keeps YAML's 0-based positions, as the wire's fields do)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    if first["type"] == "extra_forbidden":
        reason = "unknown key (see docs/collector.md for the keys)"
    elif first["type"] in ("value_error", "assertion_error"):  # the configuration's own checks
        reason = str(first["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        key, marked, rest = reason.partition("] ")
        if reason.startswith("[") and marked:
            loc, reason = [*loc, key[1:]], rest
    else:
        pattern = CONFIG_PATTERNS.get(str((first.get("ctx") or {}).get("pattern")))
        if first["type"] == "string_pattern_mismatch" and pattern:
            reason = f"must be {pattern}"
        else:
            reason = plain_file_reason(first)
        if loc and loc[-1] == "[key]":  # a mapping's key (a node name of tokens): name it
            loc = loc[:-1]
            reason = f"the name {loc[-1]!r} {reason.replace('must be', 'is not', 1)}"
        reason = _entry_of(first["loc"]) + reason
    where = f"config key {'.'.join(loc)}" if loc else "config"
    line = doc.where(*loc) if doc is not None and loc else ""
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{where}: {reason}{line}{more}".replace("\n", " ")


def _entry_of(loc: tuple[int | str, ...]) -> str:
    """The list entry the path ends in, counted from 1 ("plan entry 2: "), or ""."""
    for i in range(len(loc) - 1, 0, -1):
        if isinstance(loc[i], int):
            return f"{loc[i - 1]} entry {int(loc[i]) + 1}: "
    return ""
