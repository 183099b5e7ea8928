"""POST /api/v1/write (Prometheus remote-write 1.0) against a real ledger on each backend: the
mapping of dcgm-exporter's series, what Prometheus sends in normal life (stale markers, NaN,
counter resets, out-of-order and repeated samples: skipped or accounted, counted, 200), the
refusals (bad snappy or protobuf, oversized, snappy bomb, unknown token, unknown site: 4xx JSON,
nothing written), and an agent and remote-write feeding one device: counted once, never 409."""

from __future__ import annotations

import hashlib
import math
import sqlite3
from pathlib import Path

import pytest
import yaml
from httpkit import NOW, settings
from ledgerkit import device_totals, make_batch, node_state, open_ledger
from prometheus_client.parser import text_string_to_metric_families
from remotekit import (
    STALE,
    UUIDS,
    WRITE,
    body,
    counter_of,
    dcgm,
    energy_of,
    message,
    post,
    remote_app,
    slot_of,
    snappy,
)

from wattledger.collector.api.app import remote_writers
from wattledger.collector.ingest.remotemap import Source, is_stale, map_request, node_of, owner_of
from wattledger.collector.ingest.transaction import IngestResult
from wattledger.collector.store.base import StoreUnavailable
from wattledger.config import ConfigError

pytestmark = pytest.mark.anyio
#: the tests that book: on each store backend
books = pytest.mark.usefixtures("backend")

T0 = NOW - 600
ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER = "DCGM_FI_DEV_POWER_USAGE"


def scrape(t: float, energy_mj: float, power: float = 400.0, gpu: int = 0, **labels: str) -> list:
    """One scrape of dcgm-exporter's five series of a GPU at ``t``."""
    return [dcgm(ENERGY, [(energy_mj, t)], gpu=gpu, **labels), dcgm(POWER, [(power, t)], gpu=gpu, **labels),
            dcgm("DCGM_FI_DEV_GPU_TEMP", [(61.0, t)], gpu=gpu, **labels),
            dcgm("DCGM_FI_DEV_MEMORY_TEMP", [(70.0, t)], gpu=gpu, **labels),
            dcgm("DCGM_FI_DEV_GPU_UTIL", [(93.0, t)], gpu=gpu, **labels)]


def outcomes(response) -> dict[str, int]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    samples: dict[str, int] = response.json()["samples"]
    return {k: v for k, v in samples.items() if v}


# ---------------------------------------------------------------------------- the mapping


def test_dcgm_series_become_one_reading_per_device_and_timestamp_in_base_units() -> None:
    mapped = map_request(message(scrape(T0, 5_000_000.0) + scrape(T0, 7_000_000.0, gpu=1)).timeseries,
                         Source("prom-a", "default", "k8s-a"), ["default"], NOW)
    (valid,) = mapped.batches
    b, cols = valid.batch, valid.columns
    assert valid.remote and b.node == "gpu-node-01" and b.labels == {"site": "default", "cluster": "k8s-a"}
    assert [(d.id, d.index, d.kind, d.model) for d in b.devices] == [
        (UUIDS[0], 0, "gpu", "NVIDIA H100 80GB HBM3"), (UUIDS[1], 1, "gpu", "NVIDIA H100 80GB HBM3")]
    assert cols.ts.tolist() == [T0, T0]
    assert cols.energy_j.tolist() == [5000.0, 7000.0]  # mJ -> J
    assert cols.power_w.tolist() == [400.0, 400.0]
    assert cols.util.tolist() == [0.93, 0.93]  # % -> ratio
    assert (cols.temp_c.tolist(), cols.mem_temp_c.tolist()) == ([61.0] * 2, [70.0] * 2)
    assert mapped.samples == [[5, 5]] and mapped.counts == {}


def test_node_and_device_labels_follow_the_contract() -> None:
    assert node_of({"Hostname": "gpu-a", "instance": "10.0.0.1:9400"}, agent=False) == "gpu-a"
    assert node_of({"hostname": "gpu-b"}, agent=False) == "gpu-b"
    assert node_of({"instance": "gpu-c.example:9400"}, agent=False) == "gpu-c.example"
    assert node_of({"instance": "[::1]:9400"}, agent=False) is None  # no valid node name
    assert node_of({"node": "gpu-d", "Hostname": "x"}, agent=True) == "gpu-d"
    assert owner_of({"namespace": "nlp", "pod": "llama-7", "container": "trainer"}) == {
        "namespace": "nlp", "pod": "llama-7", "container": "trainer"}
    # a ServiceMonitor without honorLabels: the target's own labels were renamed exported_*
    assert owner_of({"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x", "exported_pod": "job-1",
                     "exported_namespace": "vision"}) == {"namespace": "vision", "pod": "job-1"}
    assert owner_of({"namespace": "gpu-operator"}) is None
    assert is_stale(STALE) and not is_stale(math.nan)


def test_the_agents_own_families_map_to_their_columns_and_metadata() -> None:
    def agent(name: str, value: float, **extra: str):  # type: ignore[no-untyped-def]
        labels = {"__name__": name, "node": "gpu-node-02", "gpu": "3", "uuid": UUIDS[0],
                  "model": "NVIDIA A100-SXM4-80GB", "instance": "10.0.0.8:9860", **extra}
        return labels, [(value, round(T0 * 1000))]

    series = [agent("wattledger_gpu_energy_joules_total", 1234.5), agent("wattledger_gpu_power_watts", 250.0),
              agent("wattledger_gpu_temperature_celsius", 55.0, sensor="gpu"),
              agent("wattledger_gpu_temperature_celsius", 66.0, sensor="memory"),
              agent("wattledger_gpu_utilization_ratio", 0.5),
              agent("wattledger_gpu_memory_used_bytes", 2.0**30),
              agent("wattledger_gpu_power_limit_watts", 400.0),
              agent("wattledger_gpu_slowdown_temperature_celsius", 87.0),
              agent("wattledger_host_cpu_utilization_ratio", 0.1)]
    mapped = map_request(message(series).timeseries, Source("p", "default"), ["default"], NOW)
    (valid,) = mapped.batches
    (d,) = valid.batch.devices
    assert (valid.batch.node, d.index, d.model, d.power_limit_w, d.slowdown_c) == (
        "gpu-node-02", 3, "NVIDIA A100-SXM4-80GB", 400.0, 87.0)
    c = valid.columns
    assert (c.energy_j[0], c.power_w[0], c.temp_c[0], c.mem_temp_c[0], c.util[0], c.mem_used_bytes[0]) == (
        1234.5, 250.0, 55.0, 66.0, 0.5, 2.0**30)
    assert mapped.counts == {"accepted": 2, "ignored": 1}  # the limits (metadata); the host's series


def test_pod_labels_become_allocations_of_the_intervals_that_end_at_their_samples() -> None:
    pod = {"namespace": "nlp", "pod": "llama-7", "container": "trainer"}
    series = [dcgm(ENERGY, [(1e6, T0), (2e6, T0 + 15), (3e6, T0 + 30)], **pod),
              dcgm(ENERGY, [(4e6, T0 + 45)], namespace="cv", pod="resnet-1"),
              dcgm(ENERGY, [(5e6, T0 + 60)]),  # no pod: idle
              dcgm(ENERGY, [(9e6, T0), (9.5e6, T0 + 30)], gpu=1, **pod)]  # GPU 1 with the same pod
    batches = map_request(message(series).timeseries, Source("p", "default"), ["default"], NOW).batches
    # one batch per run of readings held by the same pods: an interval is split by the
    # allocations of the batch that carries its end, so each run's pods get exactly its intervals
    got = [([d.id for d in vb.batch.devices], vb.columns.ts.tolist(),
            [(a.devices, a.start, a.end, a.weight, a.owner) for a in vb.batch.allocations]) for vb in batches]
    assert got == [
        ([UUIDS[0], UUIDS[1]], [T0, T0 + 15, T0 + 30, T0, T0 + 30],
         [([0], 0.0, T0 + 30, 1.0, pod), ([1], 0.0, T0 + 30, 1.0, pod)]),
        ([UUIDS[0]], [T0 + 45], [([0], 0.0, T0 + 45, 1.0, {"namespace": "cv", "pod": "resnet-1"})]),
        ([UUIDS[0]], [T0 + 60], []),
    ]


def test_a_gpu_time_sliced_between_pods_is_held_by_each() -> None:
    # dcgm-exporter gives each pod sharing a GPU its own series, with the same value
    series = [dcgm(ENERGY, [(1e6, T0)], namespace="a", pod="p1"),
              dcgm(ENERGY, [(1e6, T0)], namespace="b", pod="p2")]
    mapped = map_request(message(series).timeseries, Source("p", "default"), ["default"], NOW)
    (valid,) = mapped.batches
    assert [a.owner for a in valid.batch.allocations] == [{"namespace": "a", "pod": "p1"},
                                                          {"namespace": "b", "pod": "p2"}]
    assert [a.weight for a in valid.batch.allocations] == [1.0, 1.0]  # split evenly
    assert mapped.counts == {"duplicate": 1} and mapped.samples == [[1]]


def test_what_cannot_be_used_is_skipped_and_counted() -> None:
    series = [dcgm(ENERGY, [(STALE, T0), (math.nan, T0 + 1), (math.inf, T0 + 2), (-5.0, T0 + 3),
                            (1e6, T0 + 4), (1e6, NOW + 3600)]),
              dcgm("DCGM_FI_DEV_GPU_UTIL", [(250.0, T0 + 4)]),  # over 100 %
              dcgm(ENERGY, [(1e6, T0 + 4)], pod="other-series-same-gpu"),  # a second value of a reading
              dcgm(ENERGY, [(1e6, T0)], UUID="", uuid=""),  # no device
              dcgm("DCGM_FI_DEV_SM_CLOCK", [(1980.0, T0)])]  # not taken
    mapped = map_request(message(series).timeseries, Source("p", "default"), ["default"], NOW)
    assert mapped.counts == {"stale": 1, "nan": 1, "invalid": 5, "duplicate": 1, "ignored": 1}
    (valid,) = mapped.batches
    assert valid.columns.ts.tolist() == [T0 + 4] and mapped.samples == [[1]]


def test_dcgm_limit_and_threshold_fields_become_the_devices_metadata() -> None:
    series = [*scrape(T0, 1e6), dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT", [(700.0, T0)]),
              dcgm("DCGM_FI_DEV_SLOWDOWN_TEMP", [(87.0, T0)]), dcgm("DCGM_FI_DEV_SHUTDOWN_TEMP", [(0.0, T0)])]
    mapped = map_request(message(series).timeseries, Source("p", "default"), ["default"], NOW)
    (d,) = mapped.batches[0].batch.devices
    assert (d.power_limit_w, d.slowdown_c, d.shutdown_c) == (700.0, 87.0, None)  # 0: none reported
    assert mapped.counts == {"accepted": 2, "ignored": 1}


# ---------------------------------------------------------------------------- over HTTP, booked


@books
async def test_energy_is_the_counters_rise_and_a_resent_request_adds_nothing() -> None:
    async with remote_app() as (c, led):
        first = body(scrape(T0, 1_000_000.0) + scrape(T0 + 15, 1_006_000.0))
        assert outcomes(await post(c, first)) == {"accepted": 10}
        assert outcomes(await post(c, body(scrape(T0 + 30, 1_012_500.0)))) == {"accepted": 5}
        assert energy_of(led) == pytest.approx(12.5)  # (1_012_500 - 1_000_000) mJ
        # Prometheus re-sends a request it got no answer to: every sample is late now
        assert outcomes(await post(c, first)) == {"late": 10}
        assert energy_of(led) == pytest.approx(12.5) and counter_of(led, "late") == 2
        state = node_state(led, "gpu-node-01")
        assert (state.site, state.cluster, state.readings) == ("default", "k8s-a", 5)
        metrics = (await c.get("/metrics")).text
        got = {(s.labels["prometheus"], s.labels["outcome"]): s.value
               for f in text_string_to_metric_families(metrics) for s in f.samples
               if s.name == "wattledger_remote_write_samples_total"}
        assert got == {("prom-a", "accepted"): 15.0, ("prom-a", "late"): 10.0}


@books
async def test_out_of_order_samples_in_a_request_are_put_in_order_and_older_ones_are_late() -> None:
    async with remote_app() as (c, led):
        shuffled = [dcgm(ENERGY, [(1_010_000.0, T0 + 20), (1_000_000.0, T0), (1_004_000.0, T0 + 10)])]
        assert outcomes(await post(c, body(shuffled))) == {"accepted": 3}
        assert energy_of(led) == pytest.approx(10.0)
        # a shard that lagged behind: its samples are at or before the device's last reading
        lagging = [dcgm(ENERGY, [(1_002_000.0, T0 + 5), (1_010_000.0, T0 + 20)])]
        assert outcomes(await post(c, body(lagging))) == {"late": 2}
        assert energy_of(led) == pytest.approx(10.0)


@books
async def test_a_counter_reset_books_what_was_used_since_and_is_counted() -> None:
    async with remote_app() as (c, led):
        series = [dcgm(ENERGY, [(9_000_000.0, T0), (9_004_000.0, T0 + 10), (3_000.0, T0 + 20)])]
        assert outcomes(await post(c, body(series))) == {"accepted": 3}
        assert energy_of(led) == pytest.approx(4.0 + 3.0)  # after a driver reload: b is what was used since
        assert device_totals(led)["resets"] == 1


@books
async def test_with_dcgms_power_limit_a_counter_that_seems_to_go_back_is_bounded() -> None:
    # two Prometheus replicas racing dcgm-exporter's update: a later-stamped sample with an
    # older value. Without a limit that is a reset (the whole counter booked); with DCGM's power
    # limit the delta is an anomaly and the interval is booked from power instead
    async with remote_app() as (c, led):
        limit = dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT", [(700.0, T0)])
        first = [*scrape(T0, 5e12, power=400.0), *scrape(T0 + 15, 5e12 + 6e6, power=400.0), limit]
        assert outcomes(await post(c, body(first)))["accepted"] == 11
        raced = scrape(T0 + 16, 5e12 + 5e6, power=400.0)  # 1 s later, an older value
        assert outcomes(await post(c, body(raced))) == {"accepted": 5}
        assert energy_of(led) == pytest.approx(6000.0 + 400.0)  # the counter, then 1 s of 400 W
        assert device_totals(led)["anomalies"] == 1
        # the second request had no limit series: the stored limit stands (and held it)
        assert float(led.view().devices.floats["power_limit_w"][slot_of(led)]) == 700.0


@books
async def test_stale_markers_and_nan_are_skipped_counted_and_answered_200() -> None:
    async with remote_app() as (c, led):
        series = [dcgm(ENERGY, [(1_000_000.0, T0), (STALE, T0 + 15)]), dcgm(POWER, [(math.nan, T0)])]
        assert outcomes(await post(c, body(series))) == {"accepted": 1, "stale": 1, "nan": 1}
        assert outcomes(await post(c, body([dcgm(POWER, [(STALE, T0 + 30)])]))) == {"stale": 1}
        assert energy_of(led) == 0.0


@books
async def test_an_agent_and_remote_write_feeding_one_device_count_it_once_and_never_409() -> None:
    led = open_ledger(now=NOW)
    gpu = [{"id": UUIDS[0], "kind": "gpu", "index": 0, "model": "NVIDIA H100 80GB HBM3",
            "power_limit_w": 700.0, "slowdown_c": 87.0, "shutdown_c": 92.0}]

    def joules(t: float) -> float:  # the one physical counter both paths read (J)
        return 1000.0 + 0.4 * (t - T0)

    def agent(seq: int, start: float, n: int = 10):  # type: ignore[no-untyped-def]
        ts = [start + i for i in range(n)]
        return make_batch(node="gpu-node-01", stream="agent-1", seq=seq, devices=gpu, ts=ts,
                          power_w=[400.0] * n, energy_j=[joules(t) for t in ts])

    async with remote_app(led) as (c, _):
        assert led.ingest([agent(1, T0)]) == [IngestResult(10, False)]  # T0 .. T0 + 9
        # while the agent's stream is live its readings are the ledger's: dcgm-exporter's of
        # the same GPU are left out (counted), before and after the agent's last reading alike
        series = [dcgm(ENERGY, [(joules(T0 + 4.5) * 1000, T0 + 4.5), (joules(T0 + 12) * 1000, T0 + 12)])]
        assert outcomes(await post(c, body(series))) == {"agent": 2}
        assert led.ingest([agent(2, T0 + 10)]) == [IngestResult(10, False)]  # T0 + 10 .. 19, none late
        assert energy_of(led) == pytest.approx(joules(T0 + 19) - joules(T0))
        assert counter_of(led, "late") == 0
        # the agent silent past stale_after_seconds (120): remote-write's readings are booked
        led.clock.now = NOW + 200  # type: ignore[attr-defined]
        series = [dcgm(ENERGY, [(joules(t) * 1000, t) for t in (T0 + 30, T0 + 45)])]
        assert outcomes(await post(c, body(series))) == {"accepted": 2}
        assert energy_of(led) == pytest.approx(joules(T0 + 45) - joules(T0))
        # the agent back with what it kept: what is not after remote-write's last reading is late
        (back,) = led.ingest([agent(3, T0 + 20, 30)])  # T0 + 20 .. 49
        assert back == IngestResult(30, False)  # its own stream: never 409
        assert counter_of(led, "late") == 26  # T0 + 20 .. 45
        assert energy_of(led) == pytest.approx(joules(T0 + 49) - joules(T0))
        # the agent's metadata and labels stand; remote-write never took the device over
        d = led.view().devices
        slot = slot_of(led)
        assert float(d.floats["power_limit_w"][slot]) == 700.0 and d.slowdown_c[slot] == 87.0
        assert d.stream[slot] == "agent-1"
        assert node_state(led, "gpu-node-01").labels == {}


@books
@pytest.mark.parametrize("remote_first", [True, False])
def test_in_one_transaction_an_agents_readings_win_over_remote_writes(remote_first: bool) -> None:
    led = open_ledger(now=NOW)
    gpu = [{"id": UUIDS[0], "kind": "gpu", "index": 0, "power_limit_w": 700.0, "slowdown_c": 87.0}]
    joules = {t: 5000.0 + 300.0 * (t - T0) for t in [T0 + i * 0.5 for i in range(40)]}
    agent_ts = [t for t in joules if t % 2 == 0]  # the agent every 2 s
    remote_ts = [t for t in joules if t % 2 == 1.5]  # Prometheus' scrapes in between
    agent = make_batch(node="gpu-node-01", stream="agent-1", seq=1, devices=gpu, ts=agent_ts,
                       power_w=[300.0] * len(agent_ts), energy_j=[joules[t] for t in agent_ts])
    # a lagging counter value (scraped before the agent's reading, stamped after it) would look
    # like a reset if the two were interleaved; the agent's stream is live, so it is left out
    lagging = [(joules[t - 1.5] * 1000, t) for t in remote_ts]
    mapped = map_request(message([dcgm(ENERGY, lagging)]).timeseries, Source("p", "default"), ["default"],
                         NOW)
    group = [*mapped.batches, agent] if remote_first else [agent, *mapped.batches]
    results = led.ingest(group)
    (remote,) = [r for r in results if r.late is not None]
    assert remote.accepted == 0 and remote.agent_fed is not None and remote.agent_fed.all()
    assert energy_of(led) == pytest.approx(joules[max(agent_ts)] - joules[min(agent_ts)])
    assert device_totals(led)["resets"] == 0
    d = led.view().devices
    slot = slot_of(led)
    assert d.stream[slot] == "agent-1" and float(d.floats["power_limit_w"][slot]) == 700.0
    assert node_state(led, "gpu-node-01").labels == {}  # the agent's (none), not remote-write's


@books
async def test_pods_of_dcgm_exporter_are_charged_the_intervals_that_end_at_their_samples() -> None:
    led = open_ledger(now=NOW, teams={"nlp": [{"namespace": "nlp-*"}]})
    pod = {"namespace": "nlp-ft", "pod": "p1", "container": "trainer"}

    def joules_mj(t: float) -> float:  # 300 W throughout
        return 1e9 + 300.0 * (t - T0) * 1000

    async with remote_app(led) as (c, _):
        first = [dcgm(ENERGY, [(joules_mj(t), t) for t in (T0, T0 + 30)], **pod)]
        assert outcomes(await post(c, body(first))) == {"accepted": 2}
        # the pod's last sample, then the GPU free (dcgm-exporter drops the pod's labels)
        second = [dcgm(ENERGY, [(joules_mj(T0 + 60), T0 + 60)], **pod),
                  dcgm(ENERGY, [(STALE, T0 + 90)], **pod),
                  dcgm(ENERGY, [(joules_mj(t), t) for t in (T0 + 90, T0 + 120)])]
        assert outcomes(await post(c, body(second))) == {"accepted": 3, "stale": 1}
    teams = {row["team"]: row for row in led.spend(site=None, month="2025-11", group_by="team")}
    assert teams["nlp"]["gpu_energy_kwh"] * 3.6e6 == pytest.approx(2 * 9000.0)  # (T0, T0 + 60]
    assert teams["idle"]["gpu_energy_kwh"] * 3.6e6 == pytest.approx(2 * 9000.0)  # (T0 + 60, T0 + 120]
    # one job for the pod across both requests (its allocation starts at 0 in each)
    (job,) = [j for j in led.jobs(site="default", since=T0 - 1, until=NOW) if j["owner"]]
    assert (job["owner"], job["team"], job["devices"]) == (pod, "nlp", [UUIDS[0]])
    assert job["gpu_seconds"] == pytest.approx(60.0)


@books
async def test_a_request_of_many_nodes_is_committed_whole() -> None:
    async with remote_app() as (c, led):
        series = [s for host in ("gpu-a", "gpu-b", "gpu-c") for t in (T0, T0 + 15)
                  for s in scrape(t, 1e6 + (t - T0) * 1000, host=host)]
        assert outcomes(await post(c, body(series))) == {"accepted": 30}
        assert sorted(led.view().nodes) == ["gpu-a", "gpu-b", "gpu-c"]
        assert [energy_of(led, node=n) for n in ("gpu-a", "gpu-b", "gpu-c")] == [15.0] * 3


async def test_a_request_that_fails_in_its_transaction_writes_nothing_and_books_whole_when_resent(
        tmp_path: Path) -> None:
    led = open_ledger(db=f"sqlite:///{tmp_path}/ledger.db", now=NOW)
    # the third node's row fails inside the transaction (as a full disk would), after the first two
    raw = sqlite3.connect(f"{tmp_path}/ledger.db")
    raw.execute("CREATE TRIGGER nope BEFORE INSERT ON nodes WHEN NEW.node = 'gpu-c' "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
    raw.commit()
    series = [s for host in ("gpu-a", "gpu-b", "gpu-c") for t in (T0, T0 + 15)
              for s in scrape(t, 1e6 + (t - T0) * 1000, host=host)]
    async with remote_app(led) as (c, _):
        r = await post(c, body(series))
        assert (r.status_code, r.json()["error"]) == (500, "internal error")
        assert led.view().nodes == {} and led.view().devices.device == []
        raw.execute("DROP TRIGGER nope")
        raw.commit()
        raw.close()
        assert outcomes(await post(c, body(series))) == {"accepted": 30}  # Prometheus sends it again
        assert [energy_of(led, node=n) for n in ("gpu-a", "gpu-b", "gpu-c")] == [15.0] * 3
    led.close()


async def test_a_busy_or_unavailable_store_is_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    async with remote_app() as (c, led):
        real = led.ingest

        def away(batches):  # type: ignore[no-untyped-def]
            raise StoreUnavailable("connection refused")

        monkeypatch.setattr(led, "ingest", away)
        r = await post(c, body(scrape(T0, 1e6)))
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["error"] == "unavailable"
        monkeypatch.setattr(led, "ingest", real)
        assert outcomes(await post(c, body(scrape(T0, 1e6)))) == {"accepted": 5}


# ---------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("content", "status", "error"), [
    (b"\x05not snappy at all", 400, "malformed snappy"),
    (snappy(b"\x0a\xff\xff\xff\xff\x0f"), 400, "malformed protobuf"),  # a field longer than the body
    (snappy(b"\x0a\x02\x0a\x02\x0a\x05"), 400, "malformed protobuf"),
    (b"", 400, "malformed snappy"),
    (b"\xff\xff\xff\xff\x0f" + b"\x00" * 10, 413, "body too large"),  # a bomb: says it holds 4 GiB
    (b"x" * (1024 * 1024 + 1), 413, "body too large"),
])
async def test_a_body_that_cannot_be_read_is_a_4xx_json_error_and_writes_nothing(
        content: bytes, status: int, error: str) -> None:
    async with remote_app(max_body_bytes=1024 * 1024) as (c, led):
        r = await post(c, content)
        assert (r.status_code, r.json()["error"]) == (status, error)
        assert led.view().nodes == {}


async def test_what_inflates_past_the_limit_is_413() -> None:
    async with remote_app(max_body_bytes=64 * 1024) as (c, _):
        big = [dcgm(ENERGY, [(1.0, T0)] * 50)] * 200  # repetitive: it compresses well
        raw = body(big)
        assert len(raw) < 64 * 1024
        r = await post(c, raw)
        assert r.status_code == 413 and "after snappy" in r.json()["detail"]["reason"]


@pytest.mark.parametrize(("headers", "status"), [
    ({**WRITE, "Authorization": "Bearer wrong"}, 401),
    ({k: v for k, v in WRITE.items() if k != "Authorization"}, 401),
    ({**WRITE, "Authorization": "Bearer tok-one"}, 401),  # an agent's token is not a Prometheus's
    ({**WRITE, "Content-Encoding": "gzip"}, 415),
    ({**WRITE, "Content-Type": "application/json"}, 415),
    ({**WRITE, "Content-Type": "application/x-protobuf;proto=io.prometheus.write.v2.Request"}, 415),
])
async def test_a_token_or_media_type_refused_before_the_body(headers: dict[str, str], status: int) -> None:
    async with remote_app() as (c, led):
        r = await post(c, body(scrape(T0, 1e6)), headers)
        assert r.status_code == status and "error" in r.json()
        assert led.view().nodes == {}
        if status == 401:
            assert r.headers["www-authenticate"].startswith("Bearer")


async def test_a_series_naming_another_site_refuses_the_request() -> None:
    sites = {name: {"timezone": "UTC", "price_per_kwh": 0.1} for name in ("default", "lab")}
    async with remote_app(sites=sites) as (c, led):
        good = scrape(T0, 1e6, host="gpu-a")
        r = await post(c, body([*good, dcgm(ENERGY, [(1e6, T0)], host="gpu-b", site="mars")]))
        assert (r.status_code, r.json()["error"]) == (422, "unknown site")
        r = await post(c, body([*good, dcgm(ENERGY, [(1e6, T0)], host="gpu-b", site="lab")]))
        assert r.status_code == 403
        assert led.view().nodes == {}  # the good series of those requests were not written either
        same = dcgm(ENERGY, [(1e6, T0)], host="gpu-b", site="default")  # the token's own site: fine
        assert outcomes(await post(c, body([*good, same]))) == {"accepted": 6}


# ---------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(("entry", "message_part"), [
    ({"token": "t-1", "site": "mars"}, "remote_write_tokens.p.site: site 'mars' is not configured"),
    ({"site": "default"}, "remote_write_tokens.p.token: give token or token_sha256"),
    ({"token": "t-1", "token_sha256": "ab" * 32, "site": "default"}, "give token or token_sha256"),
    ({"token": "tok-one", "site": "default"}, "remote_write_tokens: p: its token is also an agent's"),
    ({"token_sha256": "xyz", "site": "default"}, "remote_write_tokens.p.token_sha256"),
    ({"token": "t 1", "site": "default"}, "remote_write_tokens.p.token: printable ASCII"),
])
def test_a_wrong_remote_write_token_is_one_config_line(entry: dict[str, str], message_part: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(remote_write_tokens={"p": entry})
    assert message_part in str(caught.value) and "\n" not in str(caught.value)


def test_two_prometheus_servers_may_not_share_a_token_and_a_hashed_one_works() -> None:
    with pytest.raises(ConfigError, match="a and b share one token"):
        settings(remote_write_tokens={"a": {"token": "same", "site": "default"},
                                      "b": {"token_sha256": hashlib.sha256(b"same").hexdigest(),
                                            "site": "default"}})
    hashed = {"token_sha256": hashlib.sha256(b"s3").hexdigest(), "site": "default"}
    s = settings(remote_write_tokens={"a": hashed})
    source = remote_writers(s).identify("Bearer s3")
    assert source == Source("a", "default", "")


def test_the_example_configurations_remote_write_entry_loads_once_filled_in() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in (root / "deploy/config/collector.yaml", root / "deploy/kubernetes/base/collector.yaml"):
        text = path.read_text()
        if path.name == "collector.yaml" and "kind: ConfigMap" in text:
            text = yaml.safe_load(text.split("---")[0])["data"]["collector.yaml"]
        lines = text.splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip() == "# remote_write_tokens:")
        filled = [line.replace("# ", "", 1) for line in lines[start:start + 2]]
        filled[1] = filled[1].replace("<the 64 hex digits after sha256:>", "ab" * 32)
        raw = yaml.safe_load("\n".join([*lines[:start], *filled, *lines[start + 2:]]))
        s = settings(**{k: v for k, v in raw.items() if k not in ("listen", "db")})
        assert s.remote_write_tokens["gpu-prometheus"].site == "dc1", path
