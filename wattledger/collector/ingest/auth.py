"""Per-node bearer tokens: who may push batches for which node.

Tokens come from two places: the ``tokens`` mapping of the configuration (node -> token, in
clear) and a ``tokens_file`` of hashed tokens, one ``NODE:sha256:HEX`` line per node. Both are
kept only as SHA-256 digests in memory, so a request's token is found by its digest (no
token in clear is compared, and no timing difference tells how much of a guess was right);
the digest found is then confirmed with :func:`hmac.compare_digest`.

Why SHA-256 and not a slow KDF (scrypt, PBKDF2): agent tokens are random secrets of 256 bits
made by :func:`new_token` (``wattledger collector --hash-token``), which no amount of hashing
speed makes guessable, while every batch must be authenticated at thousands of requests a
second. A slow KDF protects low-entropy passwords; it would only slow the collector down
here. Operators must therefore use generated tokens, not words.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wattledger.contract import is_node_name

HASH_LINE_RE = re.compile(r"^(?P<node>[^:\s]+):sha256:(?P<hex>[0-9a-fA-F]{64})$")
TOKEN_BYTES = 32


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def hash_line(node: str, token: str) -> str:
    """The tokens_file line for ``node`` holding ``token``."""
    return f"{node}:sha256:{token_digest(token).hex()}"


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def parse_tokens_file(text: str, source: str = "tokens_file") -> dict[str, bytes]:
    """Read ``NODE:sha256:HEX`` lines (blank lines and ``#`` comments ignored) into node -> digest.

    A malformed line raises ValueError naming its line number (never echoing its content, which
    may be a secret pasted by mistake).
    """
    out: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = HASH_LINE_RE.match(line)
        if match is None:
            raise ValueError(f"{source} line {number} is not NODE:sha256:HEX (64 hex digits)")
        node = match["node"]
        if not is_node_name(node):
            raise ValueError(f"{source} line {number}: {node!r} is not a valid node name")
        if node in out:
            raise ValueError(f"{source} line {number}: node {node!r} appears twice")
        out[node] = bytes.fromhex(match["hex"])
    return out


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None when there is none."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return None
    return value


@dataclass(frozen=True)
class Identity:
    """The outcome of checking a request's token."""

    node: str | None  # the node the token belongs to; None for an unauthenticated push
    status: int  # 0 = may go on, else the HTTP status that refuses it (401)
    reason: str = ""


class TokenBook:
    """Token digests by node, looked up by the digest of the presented token."""

    def __init__(
        self,
        tokens: Mapping[str, str] | None = None,
        hashed: Mapping[str, bytes] | None = None,
        *,
        allow_unauthenticated: bool = False,
    ) -> None:
        by_node: dict[str, bytes] = {}
        for node, token in (tokens or {}).items():
            by_node[node] = token_digest(token)
        for node, digest in (hashed or {}).items():
            if node in by_node and by_node[node] != digest:
                raise ValueError(f"node {node!r} has one token in tokens and another in tokens_file")
            by_node[node] = digest
        owners: dict[bytes, str] = {}
        for node, digest in by_node.items():
            if digest in owners:
                raise ValueError(f"nodes {owners[digest]!r} and {node!r} share one token")
            owners[digest] = node
        self._owner = owners
        self._digest = by_node
        self.allow_unauthenticated = allow_unauthenticated

    def __len__(self) -> int:
        return len(self._owner)

    def knows(self, node: str) -> bool:
        """Whether a token of this book belongs to ``node``."""
        return node in self._digest

    def identify(self, authorization: str | None) -> Identity:
        """Who the ``Authorization`` header says the caller is, from the header alone.

        Only an absent header is an unauthenticated push (accepted with
        ``allow_unauthenticated``); a credential that is present and wrong — another scheme,
        garbage, an empty header, an unknown token — is 401 in every mode: it is a
        misconfigured agent, which must hear about it.
        """
        if authorization is None:
            if self.allow_unauthenticated:
                return Identity(None, 0)
            return Identity(None, 401, "bearer token required")
        token = bearer_token(authorization)
        if token is None:
            return Identity(None, 401, "Authorization is not 'Bearer TOKEN'")
        digest = token_digest(token)
        node = self._owner.get(digest)
        # the lookup is by digest (timing says nothing about the token); confirm in constant time
        if node is None or not hmac.compare_digest(self._digest[node], digest):
            return Identity(None, 401, "unknown token")
        return Identity(node, 0)

    @staticmethod
    def check_node_name(token_node: str | None, body_node: str) -> tuple[int, str]:
        """(0, "") when a caller whose token belongs to ``token_node`` may push for ``body_node``.

        ``token_node`` None is an unauthenticated push (allowed only by configuration).
        """
        if token_node is None or hmac.compare_digest(token_node.encode(), body_node.encode()):
            return 0, ""
        return 403, f"this token is not valid for node {body_node!r}"


def read_tokens_file(path: Path) -> dict[str, bytes]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"tokens_file {str(path)!r} cannot be read: {exc.strerror}") from None
    return parse_tokens_file(text, f"tokens_file {str(path)!r}")
