"""The collector's HTTP/1.1 server: uvicorn's httptools protocol with the limits a service
that faces a whole fleet (and whatever else reaches its port) needs.

Left as it is, uvicorn reads a header of any size (a 64 MiB one was read whole and answered),
waits for headers and for a body forever (sixteen stalled uploads held the collector's pending
bytes until they went away by themselves), and answers the requests it cannot parse itself, in
``text/plain``. :class:`LimitedHttpProtocol` answers, always in JSON ``{"error", "detail"}``
and always closing the connection:

- 408 when a request's headers are not complete within ``header_timeout_seconds`` (counted
  from the connection's start for its first request, from the first byte of a later one), or
  when a body sends nothing for ``body_timeout_seconds`` while the collector waits for it;
- 431 when the headers pass ``max_header_bytes`` in all or :data:`MAX_LINE_BYTES` in one
  field, judged while they arrive: a 64 MiB header costs the collector about 64 KiB;
- 414 when the request target passes :data:`MAX_LINE_BYTES`;
- 400 for a request the parser refuses: framing (a bad chunk size, a ``Content-Length`` that
  is not a number or given twice, ``Transfer-Encoding`` with ``Content-Length``), a header line
  without a colon, a method or version that is not HTTP/1.x;
- 500 (JSON) where uvicorn would answer a fault of the application in text.

Everything else is uvicorn's, unchanged. docs/collector.md, "Limits and timeouts".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle

if TYPE_CHECKING:
    from wattledger.collector.settings import CollectorSettings

log = logging.getLogger(__name__)

#: the longest request line or header field (Apache's LimitRequestLine/FieldSize are 8190)
MAX_LINE_BYTES = 8192
#: the ASGI scope extension by which a push learns that its body timed out (fastpath.py)
EXTENSION = "wattledger.http"


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_header_bytes: int = 64 * 1024


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the protocol answers ``_refusal``."""


def error_body(error: str, field: str, reason: str) -> bytes:
    return orjson.dumps({"error": error, "detail": {"field": field, "reason": reason}})


class _JsonCycle(RequestResponseCycle):
    """uvicorn's request cycle, with its own 500 (an application that failed before it
    answered) in JSON."""

    async def send_500_response(self) -> None:
        body = error_body("internal error", "request", "a fault of the collector; see its log")
        await self.send({"type": "http.response.start", "status": 500, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")]})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body timeouts, header size limits and JSON
    refusals. Configured by subclassing (:func:`protocol_class`): uvicorn makes one instance
    per connection from the class alone."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    #: each called with a reason (``header_timeout``, ``body_timeout``, ``headers_too_large``,
    #: ``target_too_long``, ``malformed``) for each request this protocol refuses itself
    on_refusal: ClassVar[tuple[Callable[[str], None], ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a request has begun and its headers are not complete
        self._in_body = False  # its headers are complete and its body is not
        self._head_bytes = 0  # bytes of chunks received wholly inside the head
        self._field_bytes = 0  # bytes of the request line and fields parsed so far
        self._body_seen_at = 0.0  # loop time at which body bytes last arrived
        self._refusal: tuple[int, str, str, str, str] | None = None
        self._request_state: dict[str, Any] = {}

    # ---- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        wholly_in_head = self._in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # no WebSocket here (ws="none"): the request is answered as plain HTTP
            log.debug("an Upgrade request from %s answered as HTTP", self.client)
        except httptools.HttpParserError as exc:
            refusal = self._refusal or (400, "malformed request", "request", _parser_reason(exc),
                                        "malformed")
            self.refuse(*refusal)
            return
        if self._in_head:
            if wholly_in_head:
                self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self.refuse(*self._headers_too_large())
        elif self._in_body:
            self._body_seen_at = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout_seconds, self._body_check)
        elif self._idle() and self.timeout_keep_alive_task is None and self._head_timer is None:
            # bytes between requests (a stray CRLF) stopped uvicorn's keep-alive timer
            self._arm_head_timer()

    # ---- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._in_body = True, False
        self._head_bytes = self._field_bytes = 0
        self._refusal = None
        self._request_state = {}
        self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > MAX_LINE_BYTES:
            self._stop(414, "target too long", "target",
                       f"the request target is over {MAX_LINE_BYTES} bytes", "target_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._field_bytes += size + 4  # ": " and CRLF
        if size + 2 > MAX_LINE_BYTES:
            self._stop(431, "headers too large", "headers",
                       f"header field {name[:64].decode('latin-1')!r} is over {MAX_LINE_BYTES} bytes",
                       "headers_too_large")
        if self._field_bytes > self.limits.max_header_bytes:
            self._stop(*self._headers_too_large())
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._in_head, self._in_body = False, True
        cast(dict[str, Any], self.scope).setdefault("extensions", {})[EXTENSION] = self._request_state
        super().on_headers_complete()
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and type(cycle) is RequestResponseCycle:
            cycle.__class__ = _JsonCycle  # same layout; only its 500 differs

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # ---- refusals -------------------------------------------------------------------------

    def refuse(self, status: int, error: str, field: str, reason: str, what: str) -> None:
        """Answer ``status`` in JSON (when no answer has begun) and close the connection."""
        in_body = self._in_body
        self._cancel_timers()
        self._in_head = self._in_body = False
        for hook in self.on_refusal:
            hook(what)
        log.debug("refused %d (%s) from %s: %s", status, what, self.client, reason)
        if self.transport.is_closing():
            return
        cycle: RequestResponseCycle | None = self.cycle
        if cycle is not None and not cycle.response_complete:
            # this request's (or, pipelined, the one before's) answer has begun: no room for ours
            answered = cycle.response_started
            # the application's receive() now sees a disconnect, and its answer goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
        else:  # a body still coming after its answer (a 429 before it was read): close only
            answered = in_body and cycle is not None
        if not answered:
            body = error_body(error, field, reason)
            head = [STATUS_LINE[status]]
            head += [b"%s: %s\r\n" % pair for pair in self.server_state.default_headers]
            head += [b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
                     % len(body), body]
            self.transport.write(b"".join(head))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:  # what uvicorn itself calls for a bad request
        self.refuse(400, "malformed request", "request", msg, "malformed")

    def _stop(self, status: int, error: str, field: str, reason: str, what: str) -> None:
        self._refusal = (status, error, field, reason, what)
        raise _Refused(reason)

    def _headers_too_large(self) -> tuple[int, str, str, str, str]:
        return (431, "headers too large", "headers",
                f"the headers are over {self.limits.max_header_bytes} bytes", "headers_too_large")

    # ---- timers ---------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No request being read or answered."""
        cycle: RequestResponseCycle | None = self.cycle
        return not self._in_head and not self._in_body and (cycle is None or cycle.response_complete)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_head_timer()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete and not self._in_head:
            return  # a request is being answered; its end arms uvicorn's keep-alive timer
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a pipelined request: the one before it is answered first
            return
        self.refuse(408, "request timeout", "headers",
                    f"the headers were not complete within {self.limits.header_timeout_seconds:g} s",
                    "header_timeout")

    def _body_check(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:  # the application is not reading yet: the slow side is ours
            self._body_seen_at = now
        wait = self.limits.body_timeout_seconds - (now - self._body_seen_at)
        if wait > 0:
            self._body_timer = self.loop.call_later(wait, self._body_check)
            return
        self._request_state["timed_out"] = True
        self.refuse(408, "request timeout", "body",
                    f"the body sent nothing for {self.limits.body_timeout_seconds:g} s", "body_timeout")


def _parser_reason(exc: Exception) -> str:
    """The parser's own words ("Invalid character in chunk size"), or the cause of a callback's
    failure (a request target that is not ASCII)."""
    cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
    text = str(cause or exc) or type(exc).__name__
    return text[:200]


def body_timed_out(scope: Any) -> bool:
    """Whether the connection of this request was closed because its body stalled."""
    state = (scope.get("extensions") or {}).get(EXTENSION)
    return bool(state and state.get("timed_out"))


def protocol_class(limits: HttpLimits,
                   on_refusal: Callable[[str], None] | None = None) -> type[LimitedHttpProtocol]:
    """A :class:`LimitedHttpProtocol` with these limits, for ``uvicorn.Config(http=...)``."""
    return type("CollectorHttpProtocol", (LimitedHttpProtocol,),
                {"limits": limits, "on_refusal": (on_refusal,) if on_refusal is not None else ()})


def uvicorn_config(app: Any, limits: HttpLimits, *, on_refusal: Callable[[str], None] | None = None,
                   **options: Any) -> uvicorn.Config:
    """The uvicorn configuration the collector serves with (cli.py, and the tests' servers)."""
    options = {"log_config": None, "access_log": False, "lifespan": "on", "timeout_graceful_shutdown": 15,
               # nothing reads the client's address, so X-Forwarded-* need no middleware per request
               "proxy_headers": False, **options}
    return uvicorn.Config(app, http=protocol_class(limits, on_refusal), ws="none", **options)


def http_limits(settings: CollectorSettings) -> HttpLimits:
    """The limits of these collector settings (``CollectorSettings``)."""
    return HttpLimits(header_timeout_seconds=settings.header_timeout_seconds,
                      body_timeout_seconds=settings.body_timeout_seconds,
                      max_header_bytes=settings.max_header_bytes)
