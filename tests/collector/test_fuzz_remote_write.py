"""Property test of POST /api/v1/write on a real ledger: whatever the body — random bytes, random
bytes snappy-compressed, a good request with bytes flipped, or a WriteRequest of any labels,
values (NaN, stale markers, infinities, negatives) and timestamps (any int64) — the answer is
never a 5xx, always JSON; a refusal is a 4xx of the contract's (400, 403, 413, 422); and an
accepted request accounts for every one of its samples exactly once, by outcome."""

from __future__ import annotations

import os
from typing import Any

import anyio.from_thread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from remotekit import STALE, body, dcgm, post, remote_app, snappy

from wattledger.collector.ingest.remotemap import INFO_SERIES, READING_SERIES, TEMPERATURE_SERIES

T0 = 1_764_259_000.0
#: examples per run (FUZZ_EXAMPLES=3000 for a longer hunt; 300 take a few seconds)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
NAMES = [*READING_SERIES, *INFO_SERIES, TEMPERATURE_SERIES, "up", ""]
LABELS = ["UUID", "uuid", "Hostname", "hostname", "instance", "node", "gpu", "modelName", "model", "sensor",
          "namespace", "pod", "container", "exported_pod", "site"]
GOOD = body([dcgm("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", [(1e6, T0), (1.1e6, T0 + 15)]),
             dcgm("DCGM_FI_DEV_POWER_USAGE", [(400.0, T0)], gpu=1, pod="p", namespace="n")])

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(STALE),
                   st.floats(min_value=0, max_value=1e9))
stamps = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(int(T0 * 1000), int(T0 * 1000) + 10**6))
series = st.tuples(
    st.dictionaries(st.sampled_from(LABELS), st.one_of(st.text(max_size=300), st.sampled_from(
        ["GPU-0", "gpu-node-01", "10.0.0.1:9400", "0", "memory", "gpu", "default", "lab"]))),
    st.sampled_from(NAMES),
    st.lists(st.tuples(values, stamps), max_size=6))
requests = st.lists(series, max_size=8)


def flipped(raw: bytes, at: list[int]) -> bytes:
    data = bytearray(raw)
    for i in at:
        data[i % len(data)] ^= 0xFF
    return bytes(data)


bodies = st.one_of(
    st.binary(max_size=512).map(lambda b: ("bytes", b, None)),
    st.binary(max_size=512).map(lambda b: ("snappy", snappy(b), None)),
    st.lists(st.integers(0, 10**6), min_size=1, max_size=4).map(
        lambda at: ("flipped", flipped(GOOD, at), None)),
    requests.map(lambda r: ("request", body([({**labels, "__name__": name}, [(v, t) for v, t in samples])
                                             for labels, name, samples in r]),
                            sum(len(samples) for _, _, samples in r))),
)


def test_no_body_gives_a_5xx_and_every_sample_is_counted_once() -> None:
    sites = {name: {"timezone": "UTC", "price_per_kwh": 0.1} for name in ("default", "lab")}
    with anyio.from_thread.start_blocking_portal() as portal, \
            portal.wrap_async_context_manager(remote_app(sites=sites, max_body_bytes=64 * 1024)) as (c, _):

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(bodies)
        def check(case: tuple[str, bytes, int | None]) -> None:
            kind, content, samples = case
            r = portal.call(post, c, content)
            answer: dict[str, Any] = r.json()
            assert r.status_code in (200, 400, 403, 413, 422), (kind, r.status_code, answer)
            if r.status_code != 200:
                assert set(answer) == {"error", "detail"} and answer["error"]
                return
            if samples is not None:
                assert sum(answer["samples"].values()) == samples, answer
            assert all(isinstance(v, int) and v >= 0 for v in answer["samples"].values())

        check()
