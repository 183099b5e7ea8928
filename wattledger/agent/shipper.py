"""The shipper: one thread that POSTs a spool's batches to the collector in seq order, one in
flight, and decides from each answer whether the batch is done, retried or parked.

Retry policy (docs/delivery.md): connection errors, 408, 429 and 5xx are retried with capped
exponential backoff and jitter, ``Retry-After`` honoured; 401/403/407 keep the batch and
back off with an error log (a wrong token must not lose data); 3xx, 404 and 405 mean the
collector URL is wrong, not the batch, so they are retried too; any other 4xx parks the batch
in the dead-letter table so one bad batch never blocks the stream; 2xx acknowledges it. With
several collectors, an attempt that did not move the stream on sends the next one to the next
collector that is ready, each collector with its own backoff (``failover.py``).

stdlib ``http.client`` only (keep-alive, https through ``ssl``): the agent has to stay small.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from wattledger.agent.failover import Failover, display_url
from wattledger.agent.spool import Spool, SpooledBatch, SpoolError

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024
#: a Retry-After beyond this is taken as this (a broken proxy must not park us for a day)
MAX_RETRY_AFTER = 600.0
#: while retrying, log a warning on the first failures (one round of the collectors) and then
#: every this many attempts
LOG_EVERY = 10
#: after an unexpected error (the spool's disk failing), wait this long before going on
ERROR_PAUSE = 5.0


class Outcome(StrEnum):
    OK = "ok"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    AUTH_ERROR = "auth_error"
    DEAD_LETTER = "dead_letter"


def classify(status: int) -> Outcome:
    """What to do with a batch after a non-2xx answer."""
    if status in (401, 403, 407):
        return Outcome.AUTH_ERROR
    if 400 <= status < 500 and status not in (404, 405, 408, 409, 429):
        return Outcome.DEAD_LETTER
    # 409: another agent pushes for this node; the batch is kept until this one takes over
    return Outcome.RETRY  # 3xx, 404, 405, 408, 409, 429, 5xx (and anything stranger)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class Backoff:
    """Capped exponential backoff with jitter: attempt n waits a random time in
    [d/2, d], d = min(cap, base x 2^(n-1)); a server's Retry-After is a floor (plus up to 20 %
    jitter, so a crowd told "come back in 5 s" does not come back in the same millisecond)."""

    def __init__(self, base: float = 0.5, cap: float = 60.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.cap, self.base * 2.0 ** min(max(attempt - 1, 0), 60))
        if retry_after is not None:
            return retry_after * self._rng.uniform(1.0, 1.2)
        return self._rng.uniform(ceiling / 2, ceiling)


class TokenSource:
    """The bearer token: fixed, or read from a file and re-read when the file changes, so
    fixing a wrong token on disk is picked up without a restart."""

    def __init__(self, token: str | None, token_file: Path | None = None) -> None:
        self._token = token
        self._file = token_file
        self._stamp: tuple[int, int] | None = None

    def __call__(self) -> str | None:
        if self._file is None:
            return self._token
        try:
            st = self._file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._token = self._file.read_text(encoding="utf-8").strip() or None
                self._stamp = stamp
        except OSError as exc:
            log.error("cannot read token file %s: %s (using the last token read)", self._file, exc)
        return self._token


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: bytes


class HttpSender:
    """POST bodies to ``<collector>/v1/batches`` over one kept-alive connection."""

    def __init__(self, collector_url: str, user_agent: str = "wattledger-agent",
                 node: str | None = None) -> None:
        """``node``, when given, is sent as ``X-Wattledger-Node`` with every push: a claim the
        collector does not trust, but counts its 401/403 answers by (docs/metrics.md)."""
        parts = urlsplit(collector_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{collector_url!r} is not an http:// or https:// URL")
        self.url = display_url(collector_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self.path = parts.path.rstrip("/") + "/v1/batches"
        self._headers = {"Content-Type": "application/json", "Content-Encoding": "gzip",
                         "User-Agent": user_agent}
        if node:
            self._headers["X-Wattledger-Node"] = node
        self._conn: http.client.HTTPConnection | None = None
        self._ssl: ssl.SSLContext | None = None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def post(self, body: bytes, token: str | None, timeout: float) -> Answer:
        """One request; raises OSError or http.client.HTTPException when no answer came."""
        headers = dict(self._headers)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        for fresh_try in (False, True):
            reused = self._conn is not None
            conn = self._conn or self._connect(timeout)
            self._conn = conn
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read(MAX_ANSWER_BYTES)
            except (ConnectionError, http.client.BadStatusLine) as exc:
                self.close()
                # a kept-alive connection the server closed while idle: one fresh try at once
                if reused and not fresh_try:
                    log.debug("kept-alive connection was closed (%s); reconnecting", exc)
                    continue
                raise
            except BaseException:
                self.close()
                raise
            if resp.will_close or not resp.isclosed():
                self.close()
            return Answer(resp.status, resp.getheader("Retry-After"), data)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
            self._conn = None


def _unknown_site(answer: Answer) -> bool:
    """Is this the collector's refusal of a site it is not configured for (DESIGN.md: a node
    belongs to the site its ``site`` label names)?"""
    try:
        error = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(error, dict) and error.get("error") == "unknown site"


def _reason(answer: Answer) -> str:
    """The collector's error, in one line, for logs and the dead-letter table."""
    text = answer.body[:500].decode("utf-8", "replace").replace("\n", " ").strip()
    return f"HTTP {answer.status}: {text}" if text else f"HTTP {answer.status}"


class Shipper:
    """The shipping thread of one spool, to one collector or several (``failover.py``: sticky
    to the one that answers, on to the next after a failed attempt). ``cut_if_due`` is called
    whenever the thread is idle so that an open batch is cut on time even when no sample
    arrives."""

    def __init__(
        self,
        spool: Spool,
        senders: Sequence[HttpSender],
        token: Callable[[], str | None],
        *,
        cut_if_due: Callable[[], None],
        idle_wait: float,
        backoff: Backoff | None = None,
        http_timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self._senders = list(senders)
        self._token = token
        self._cut_if_due = cut_if_due
        self._idle_wait = idle_wait
        self._backoff = backoff or Backoff()
        self.failover = Failover([s.url for s in self._senders], self._backoff.delay, clock)
        self._http_timeout = http_timeout
        self._clock = clock
        self._wall = wall_clock
        self._work = threading.Event()  # a batch was cut, or stop was asked
        self._interrupt = threading.Event()  # cut a backoff short (stop)
        self._deadline: float | None = None  # set by drain(): ship until then, then leave
        self._thread: threading.Thread | None = None
        self._failures = 0  # consecutive attempts (any collector) that did not move the stream on
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.shipped_readings = 0
        #: (outcome, seconds) of the most recent backoffs, for logs and tests
        self.recent_delays: list[tuple[Outcome, float]] = []

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="wattledger-shipper", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._work.set()

    def drain(self, timeout: float) -> None:
        """Ship what is waiting for up to ``timeout`` seconds, then stop (returns at once)."""
        self._deadline = self._clock() + timeout
        self._work.set()
        self._interrupt.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to leave; False if it is still stuck (in a request)."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - self._clock()

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        try:
            while True:
                remaining = self._remaining()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    delay = self._step(remaining)
                except SpoolError:
                    return  # the spool was closed under us by stop(): what is left ships next start
                except Exception:  # a disk error (or a bug) must not end delivery for good
                    log.exception("shipper: unexpected error; trying again in %.0f s", ERROR_PAUSE)
                    delay = ERROR_PAUSE
                if delay is None:
                    return  # draining and nothing left
                if delay > 0:
                    self._pause(delay)
        finally:
            for sender in self._senders:
                sender.close()

    def _step(self, remaining: float | None) -> float | None:
        """One turn of the loop: the wait before the next, or None to leave."""
        self._cut_if_due()
        batch = self.spool.next_batch()
        if batch is not None:
            return self.ship(batch)
        if remaining is not None:
            return None
        self._work.wait(self._idle_wait)
        self._work.clear()
        return 0.0

    def _pause(self, delay: float) -> None:
        remaining = self._remaining()
        if remaining is not None:
            delay = min(delay, max(remaining, 0.0))
        if delay > 0:
            # drain() cuts the current backoff short once (one more try at once); later
            # backoffs while draining wait as usual, within the deadline
            self._interrupt.wait(delay)
            self._interrupt.clear()

    def _pick(self) -> int:
        """The collector of this attempt; a switch closes the connection to the one left."""
        before = self.failover.current
        chosen = self.failover.pick()
        if chosen != before:
            self._senders[before].close()
            urls = self.failover.collectors
            # the first switches of an outage say where the stream goes; later ones (every
            # collector failing in turn) only every LOG_EVERY failures
            if self._failures <= len(urls) or self._failures % LOG_EVERY == 0:
                log.warning("failing over from collector %s to %s", urls[before].url, urls[chosen].url)
        return chosen

    def ship(self, batch: SpooledBatch) -> float:
        """Send one batch (next_batch() marked it in flight) and act on the answer; returns
        how long to wait before the next try. ack() and dead_letter() settle the batch, every
        other path hands it back with release() (a full spool may then drop it, counted)."""
        timeout = self._http_timeout
        remaining = self._remaining()
        if remaining is not None:
            timeout = max(0.5, min(timeout, remaining))
        i = self._pick()
        sender = self._senders[i]
        try:
            answer = sender.post(batch.body, self._token(), timeout)
        except (OSError, http.client.HTTPException) as exc:
            self.spool.release(batch)
            return self._retry(i, batch, f"no answer ({type(exc).__name__}: {exc})", None, up=False)
        except BaseException:
            self.spool.release(batch)
            raise
        if 200 <= answer.status < 300:
            self.failover.succeeded(i)
            self._done(batch, answer)
            return 0.0
        outcome = classify(answer.status)
        if outcome is Outcome.DEAD_LETTER and not _unknown_site(answer):
            reason = _reason(answer)
            self.spool.dead_letter(batch, answer.status, reason)
            self.failover.succeeded(i)  # it answered for the batch itself: the collector is fine
            self.outcomes[Outcome.DEAD_LETTER] += 1
            self._failures = 0
            log.error("collector %s refused batch %s/%d (%d readings): %s; moved it to the dead-letter "
                      "table and going on with the stream", sender.url, batch.stream, batch.seq,
                      batch.readings, reason)
            return 0.0
        self.spool.release(batch)
        retry_after = parse_retry_after(answer.retry_after, self._wall())
        if outcome is Outcome.DEAD_LETTER:
            return self._site_missing(i, batch, answer, retry_after)
        if outcome is Outcome.AUTH_ERROR:
            self._failures += 1
            self.outcomes[Outcome.AUTH_ERROR] += 1
            delay = self.failover.failed(i, up=True, retry_after=retry_after)
            self._note(Outcome.AUTH_ERROR, delay)
            log.error("collector %s rejected the agent's token (%s); batch %s/%d and everything after it "
                      "stay spooled; fix the token (--token-file) or the collector's tokens; next attempt "
                      "in %.1f s", sender.url, _reason(answer), batch.stream, batch.seq, delay)
            return delay
        what = _reason(answer)
        wrong_url = answer.status in (404, 405) or 300 <= answer.status < 400
        if wrong_url:
            what += f" (is the collector URL right? POST {sender.path})"
        # up: it answered as a collector does (408, 429: busy or slow, not broken)
        up = answer.status < 500 and not wrong_url
        return self._retry(i, batch, what, retry_after, up=up)

    def _site_missing(self, i: int, batch: SpooledBatch, answer: Answer, retry_after: float | None) -> float:
        """The collector has no site for this node's ``site`` label: a configuration mismatch,
        as a wrong token is. Parking the backlog as dead letters would keep every reading out of
        the ledger once the collector's ``sites`` are fixed, so the batch stays and is retried."""
        self._failures += 1
        self.outcomes[Outcome.RETRY] += 1
        delay = self.failover.failed(i, up=True, retry_after=retry_after)
        self._note(Outcome.RETRY, delay)
        log.error("collector %s does not know this node's site (%s); batch %s/%d and everything after it "
                  "stay spooled; add the site to the collector's sites or fix --label site; next attempt "
                  "in %.1f s", self._senders[i].url, _reason(answer), batch.stream, batch.seq, delay)
        return delay

    def _retry(self, i: int, batch: SpooledBatch, what: str, retry_after: float | None, *, up: bool) -> float:
        self._failures += 1
        self.outcomes[Outcome.RETRY] += 1
        delay = self.failover.failed(i, up=up, retry_after=retry_after)
        self._note(Outcome.RETRY, delay)
        if self._failures <= len(self._senders) or self._failures % LOG_EVERY == 0:
            log.warning("batch %s/%d not delivered to %s: %s; attempt %d, next attempt in %.1f s (it "
                        "stays spooled)", batch.stream, batch.seq, self._senders[i].url, what,
                        self._failures, delay)
        return delay

    def _done(self, batch: SpooledBatch, answer: Answer) -> None:
        duplicate = False
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
            duplicate = orjson.loads(answer.body).get("duplicate") is True
        self.spool.ack(batch)
        self.outcomes[Outcome.DUPLICATE if duplicate else Outcome.OK] += 1
        self.shipped_readings += batch.readings
        if self._failures:
            log.info("collector %s reachable again after %d failed attempts",
                     self.failover.collectors[self.failover.current].url, self._failures)
        self._failures = 0

    def _note(self, outcome: Outcome, delay: float) -> None:
        self.recent_delays.append((outcome, delay))
        del self.recent_delays[:-64]
