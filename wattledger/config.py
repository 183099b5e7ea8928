"""Command-line options that also read from the environment and a YAML file.

Every flag ``--some-flag`` of a sub-command can be given three ways, and the first that is
present wins: the flag itself, the environment variable ``WATTLEDGER_SOME_FLAG``, the key
``some_flag`` (or ``some-flag``) in the ``--config`` YAML file. A bad value from any of them
is a :class:`ConfigError` whose message is one line, which the entry point prints before it
exits with status 2.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import yaml

ENV_PREFIX = "WATTLEDGER_"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message is one line for the operator."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (its usage can wrap over many)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


# ---------------------------------------------------------------------------- value types
# Each takes the raw value (a string from a flag or the environment, or whatever YAML gave)
# and returns the typed value, or raises ValueError with a short reason.


def positive_float(raw: object) -> float:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{raw!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{raw!r} must be a number greater than 0")
    return value


def non_negative_int(raw: object) -> int:
    try:
        value = int(str(raw), 10)
    except ValueError:
        raise ValueError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{raw!r} must be 0 or more")
    return value


def positive_int(raw: object) -> int:
    value = non_negative_int(raw)
    if value == 0:
        raise ValueError(f"{raw!r} must be 1 or more")
    return value


def byte_size(raw: object) -> int:
    """Bytes, optionally with a binary suffix: 1073741824, 512MiB, 1GiB."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]i?B?)?\s*", str(raw), re.IGNORECASE)
    if not match:
        raise ValueError(f"{raw!r} is not a size in bytes (e.g. 1073741824 or 1GiB)")
    unit = (match.group(2) or "").upper()[:1]
    value = int(match.group(1)) * (1 << (10 * " KMGT".index(unit or " ")))
    if value <= 0:
        raise ValueError(f"{raw!r} must be more than 0 bytes")
    return value


def boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def host_port(raw: object) -> HostPort:
    text = str(raw).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"{text!r} is not HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is outside 0..65535")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    return HostPort(host, port)


def http_url(raw: object) -> str:
    text = str(raw).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or " " in text:
        raise ValueError(f"{text!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"{text!r} has a bad port") from None
    return text.rstrip("/")


def http_urls(raw: object) -> list[str]:
    """One URL or a comma list of them (``--collector A,B``); for a repeatable option, whose
    every occurrence is converted on its own (the caller joins the lists)."""
    items = raw if isinstance(raw, list) else str(raw).split(",")
    urls = [http_url(item) for item in items if str(item).strip()]
    if not urls:
        raise ValueError(f"{raw!r} holds no URL")
    return urls


def key_value(raw: object) -> tuple[str, str]:
    text = str(raw)
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"{text!r} is not KEY=VALUE")
    if not (key[0].isalpha() or key[0] == "_") or not all(c.isalnum() or c == "_" for c in key):
        raise ValueError(f"label name {key!r} is not a valid Prometheus label name")
    return key, value.strip()


def existing_file(raw: object) -> Path:
    path = Path(str(raw)).expanduser()
    try:
        found = path.is_file()
    except OSError as exc:  # a name too long, a loop of links: as good as missing
        raise ValueError(f"{str(path)[:200]!r}: {exc.strerror}") from None
    if not found:
        raise ValueError(f"{str(path)!r}: no such file")
    return path


def bearer_token(raw: str) -> str:
    """A bearer token as it travels in an HTTP header: printable ASCII, no spaces."""
    token = raw.strip()
    if not token:
        raise ValueError("it is empty")
    if not (token.isascii() and token.isprintable()) or any(c.isspace() for c in token):
        raise ValueError("printable ASCII characters only, no spaces")
    return token


def text(raw: object) -> str:
    value = str(raw).strip()
    if not value:
        raise ValueError("must not be empty")
    return value


# ---------------------------------------------------------------------------- the resolver


@dataclass(frozen=True)
class Option:
    flag: str  # "--token-file"
    convert: Callable[[object], Any]
    default: Any
    help: str
    multiple: bool = False  # repeatable flag (e.g. --label); the value is a list
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """Add ``options`` as flags whose absence is visible (no argparse default)."""
    for opt in options:
        default = f" (default: {opt.default})" if opt.default not in (None, [], ()) else ""
        parser.add_argument(
            opt.flag,
            dest=opt.dest,
            action="append" if opt.multiple else "store",
            default=argparse.SUPPRESS,
            metavar=opt.metavar,
            help=f"{opt.help}{default} [env {opt.env}]",
        )


CONFIG_ENV = "WATTLEDGER_CONFIG"


class YamlDoc(dict[str, Any]):
    """A YAML file's mapping, which remembers where each key was written: ``lines`` maps a key's
    path (``("sites", "dc1", "pue")``; list entries by their 0-based number) to its 1-based line,
    so that an error can name the line of the offending key."""

    def __init__(self, values: Mapping[str, Any], path: str, lines: Mapping[tuple[str, ...], int]) -> None:
        super().__init__(values)
        self.path = path
        self.lines = dict(lines)

    def where(self, *key: object) -> str:
        """`` (in 'F', line N)`` for the deepest part of ``key`` that the file has, or ""."""
        parts = tuple(str(k) for k in key)
        while parts:
            line = self.lines.get(parts)
            if line is not None:
                return f" (in {self.path!r}, line {line})"
            parts = parts[:-1]
        return ""


def _key_lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Each key's line in a composed YAML document (keys of top-level mappings: ``-`` read as ``_``)."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = str(key.value)
            name = name.replace("-", "_") if not path else name
            lines[(*path, name)] = key.start_mark.line + 1
            lines.update(_key_lines(value, (*path, name)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, str(i))] = item.start_mark.line + 1
            lines.update(_key_lines(item, (*path, str(i))))
    return lines


#: keys people write for an agent's or collector's key, with the key that is meant
KEY_HINTS = {"labels": "label"}


def unknown_key(key: str, known: Collection[str]) -> str:
    """``unknown key 'labels' (did you mean 'label'?)``"""
    meant = KEY_HINTS.get(key) if KEY_HINTS.get(key) in known else None
    if meant is None:
        close = difflib.get_close_matches(key.replace("-", "_"), sorted(known), n=1, cutoff=0.8)
        meant = close[0] if close else None
    return f"unknown key {key!r}" + (f" (did you mean {meant!r}?)" if meant else "")


def config_file_values(args: argparse.Namespace, env: Mapping[str, str],
                       known: Collection[str] | None = None) -> dict[str, Any]:
    """The keys of the ``--config`` (else ``WATTLEDGER_CONFIG``) file, ``-`` read as ``_``; {}
    when neither names a file (a :class:`YamlDoc` when one does). With ``known``, a key outside
    it is a ConfigError naming the key as written and its line (a typo must not be silently
    ignored)."""
    path = getattr(args, "config", None) or env.get(CONFIG_ENV)
    if not path:
        return {}
    raw = load_yaml(path)
    if known is not None:
        unknown = sorted(str(k) for k in raw if str(k).replace("-", "_") not in known)
        if unknown:
            raise ConfigError(f"config file {str(path)!r}, line "
                              f"{raw.lines.get((unknown[0].replace('-', '_'),), '?')}: "
                              f"{unknown_key(unknown[0], known)}")
    return YamlDoc({str(k).replace("-", "_"): v for k, v in raw.items()}, raw.path, raw.lines)


def load_yaml(path: Path | str) -> YamlDoc:
    """Read a YAML mapping (with its keys' lines); a missing, unreadable or malformed file is a
    ConfigError."""
    path = Path(path).expanduser()
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(raw)
        node = yaml.compose(raw, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if data is None:
        return YamlDoc({}, str(path), {})
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys to values")
    return YamlDoc(data, str(path), _key_lines(node) if node is not None else {})


def resolve(
    options: Sequence[Option],
    flags: argparse.Namespace,
    file_values: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge flags > environment > config file > default for each option, converting values."""
    env = os.environ if env is None else env
    given = vars(flags)
    out: dict[str, Any] = {}
    for opt in options:
        source: str
        raw: Any
        where = ""  # for a value from the file: the file and the line of its key
        entries: list[str] = []  # a file's list or mapping: each entry's key in ``lines``
        if opt.dest in given:
            source, raw = opt.flag, given[opt.dest]
        elif opt.env in env:
            source, raw = opt.env, env[opt.env]
            if opt.multiple:
                raw = [part for part in raw.split(",") if part.strip()]
        elif opt.dest in file_values or opt.dest.replace("_", "-") in file_values:
            where = file_values.where(opt.dest) if isinstance(file_values, YamlDoc) else ""
            source = f"config key {opt.dest!r}"
            raw = file_values.get(opt.dest, file_values.get(opt.dest.replace("_", "-")))
            if opt.multiple and isinstance(raw, Mapping):
                entries = [str(k) for k in raw]  # each entry's line: by its key
                raw = [f"{k}={v}" for k, v in raw.items()]
            elif opt.multiple and isinstance(raw, list):
                entries = [str(i) for i in range(len(raw))]  # by its position
            elif opt.multiple:
                raw = [raw]
        else:
            out[opt.dest] = list(opt.default) if opt.multiple else opt.default
            continue
        if not opt.multiple:
            try:
                out[opt.dest] = opt.convert(raw)
            except ValueError as exc:
                raise ConfigError(f"{source}: {exc}{where}") from None
            continue
        values = []
        for i, item in enumerate(raw):
            try:
                values.append(opt.convert(item))
            except ValueError as exc:  # a file's entry: the line of that entry, not of its key
                if entries and isinstance(file_values, YamlDoc):
                    where = file_values.where(opt.dest, entries[i])
                raise ConfigError(f"{source}: {exc}{where}") from None
        out[opt.dest] = values
    return out


def default_state_dir() -> Path:
    """Where wattledger keeps its state when no path is given.

    ``WATTLEDGER_STATE_DIR``; else systemd's ``STATE_DIRECTORY``; else ``/var/lib/wattledger``
    for root; else ``$XDG_STATE_HOME/wattledger`` (``~/.local/state/wattledger``).
    """
    for var in ("WATTLEDGER_STATE_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0]).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/wattledger")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "wattledger"
