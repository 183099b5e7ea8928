"""The slurm source asking slurmrestd (``GET /slurm/v0.0.44/jobs/``) instead of reading the
prolog's folder: a real HTTPS server on loopback (the test CA, TLS verified) serving a
recorded answer, the JWT checked; jobs on this node by GPU index, on another node, pending,
finished, sharing a GPU by shards; a refused token, a hang, a broken answer.

``slurmrestd/v0.0.44-jobs.json`` is shaped field for field on Slurm's data_parser v0.0.44 as
Slurm 25.11 and 26.05 ship it (``src/plugins/data_parser/v0.0.44/parsers.c``: the
``JOB_INFO`` array in its order, ``OPENAPI_JOB_INFO_RESP``, ``JOB_RES``/``JOB_RES_NODE``, the
``{"set", "infinite", "number"}`` of ``*_NO_VAL``; ``gres_detail`` strings as
``src/stepmgr/gres_stepmgr.c`` builds them), checked against answers recorded from real
slurmrestd 23.11 and 25.05 by other projects; its jobs and names are ours."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trustme

from agent.json_server import JsonServer, tls_for
from agent.test_kubernetes import wait_for
from wattledger.agent.allocations import AllocationTracker
from wattledger.agent.sources.base import SourceError, SourceUnavailable
from wattledger.agent.sources.slurm import SlurmSettings, SlurmSource
from wattledger.agent.sources.slurmrestd import (
    SlurmrestdSettings,
    expand_hostlist,
    gpu_weights,
    jobs_on_node,
    timestamp,
)
from wattledger.contract import Device

RECORDED = Path(__file__).parent / "slurmrestd" / "v0.0.44-jobs.json"
JOBS_PATH = "/slurm/v0.0.44/jobs/"
TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.wattledger-agent.c2lnbmF0dXJl"
NODE = "gpu-node-01"
T = 1796000000.0  # the recording's clock
GPUS = [Device(id=f"GPU-{i}{i}{i}{i}bbbb-0000-0000-0000-000000000000", kind="gpu", index=i)
        for i in range(4)]


def recorded() -> Any:
    return json.loads(RECORDED.read_text())


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def slurmrestd(ca: trustme.CA) -> Iterator[JsonServer]:
    server = JsonServer({JOBS_PATH: recorded()}, tls=tls_for(ca),
                        required={"X-SLURM-USER-TOKEN": TOKEN, "X-SLURM-USER-NAME": "wattledger"})
    yield server
    server.close()


def token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "slurmrestd.jwt"
    path.write_text(token + "\n")
    return path


def source(server: JsonServer, tmp_path: Path, ca_file: Path | None, token: str = TOKEN,
           interval: float = 0.05, timeout: float = 2.0) -> SlurmSource:
    rest = SlurmrestdSettings(url=server.url, token_file=token_file(tmp_path, token), node=NODE,
                              user="wattledger", ca_file=ca_file, interval=interval, timeout=timeout)
    return SlurmSource(SlurmSettings(job_dir=tmp_path / "unused", rest=rest))


def opened(src: SlurmSource) -> SlurmSource:
    src.open()
    assert src.poller is not None
    poller = src.poller
    wait_for(lambda: poller.polls >= 1 and (poller.latest() is not None or poller.last_error is not None))
    return src


def test_jobs_of_this_node_by_gpu_index(slurmrestd: JsonServer, tmp_path: Path, ca_file: Path) -> None:
    src = opened(source(slurmrestd, tmp_path, ca_file))
    try:
        held = {h.key: h for h in src.holdings(T + 300, GPUS)}
    finally:
        src.close()
    # 48214 runs on another node, 48215 is pending, 48218 holds no GPU here
    assert sorted(held) == ["slurm:48210", "slurm:48213", "slurm:48216", "slurm:48217"]
    running = held["slurm:48213"]  # gpu-node-[01-02]: this node's entry is the first, IDX:0-1
    assert running.device_ids == (GPUS[0].id, GPUS[1].id) and running.weight == 1.0
    assert dict(running.owner) == {"job": "48213", "account": "vision", "user": "kim", "partition": "h100"}
    assert (running.since, running.until) == (T, None)
    done = held["slurm:48210"]  # COMPLETED: closed at its end_time
    assert done.device_ids == (GPUS[3].id,) and (done.since, done.until) == (T - 3600, T - 1800)
    # two jobs on GPU 2 by shards (3 of 4 and 1 of 4): they split it 3:1
    assert [(held[k].device_ids, held[k].weight) for k in ("slurm:48216", "slurm:48217")] == [
        ((GPUS[2].id,), 3.0), ((GPUS[2].id,), 1.0)]
    assert set(slurmrestd.paths) == {JOBS_PATH}
    assert slurmrestd.headers[0]["X-SLURM-USER-TOKEN"] == TOKEN


def test_the_tracker_makes_one_closed_and_three_open_allocations(slurmrestd: JsonServer, tmp_path: Path,
                                                                  ca_file: Path) -> None:
    src = opened(source(slurmrestd, tmp_path, ca_file))
    tracker = AllocationTracker()
    try:
        for ts in (T + 300, T + 301):  # the finished job, listed again, changes nothing
            tracker.observe("slurm", ts, src.holdings(ts, GPUS))
            spans = sorted((a.key, a.start, a.end) for a in tracker.drain())
            if ts == T + 300:
                assert spans == [("slurm:48210", T - 3600, T - 1800), ("slurm:48213", T, None),
                                 ("slurm:48216", T + 60, None), ("slurm:48217", T + 90, None)]
            else:
                assert spans == []
        slurmrestd.routes[JOBS_PATH] = {**recorded(), "jobs": []}  # every job gone
        polls = src.poller.polls if src.poller else 0
        wait_for(lambda: src.poller is not None and src.poller.polls >= polls + 2)
        tracker.observe("slurm", T + 302, src.holdings(T + 302, GPUS))
        assert sorted((a.key, a.end) for a in tracker.drain()) == [
            ("slurm:48213", T + 301), ("slurm:48216", T + 301), ("slurm:48217", T + 301)]
    finally:
        src.close()


def test_a_refused_token_is_401_and_the_source_down(slurmrestd: JsonServer, tmp_path: Path,
                                                     ca_file: Path) -> None:
    src = opened(source(slurmrestd, tmp_path, ca_file, token="eyJ.expired.token"))
    try:
        with pytest.raises(SourceError, match=r"401 .*token is missing, expired or refused"):
            src.holdings(time.time(), GPUS)
    finally:
        src.close()


def test_tls_is_verified_against_the_ca_file(slurmrestd: JsonServer, tmp_path: Path, ca_file: Path) -> None:
    src = opened(source(slurmrestd, tmp_path, ca_file=None))  # the system's trust store: not our CA
    try:
        with pytest.raises(SourceError, match="CERTIFICATE_VERIFY_FAILED"):
            src.holdings(time.time(), GPUS)
    finally:
        src.close()


def test_a_hanging_slurmrestd_times_out_and_never_delays_a_sample(slurmrestd: JsonServer, tmp_path: Path,
                                                                   ca_file: Path) -> None:
    slurmrestd.stall_seconds = 5.0
    src = source(slurmrestd, tmp_path, ca_file, timeout=0.3)
    assert src.poller is not None
    src.open()
    try:
        started = time.monotonic()
        with pytest.raises(SourceError, match="no reading yet"):
            src.holdings(time.time(), GPUS)  # answered at once: the request waits on its own thread
        assert time.monotonic() - started < 0.1
        poller = src.poller
        wait_for(lambda: poller.last_error is not None, timeout=5.0)
        assert "timed out" in poller.last_error and time.monotonic() - started < 3.0
        with pytest.raises(SourceError, match="timed out"):
            src.holdings(time.time(), GPUS)
    finally:
        slurmrestd.stall_seconds = 0.0
        src.close()


def test_an_answer_that_is_not_json_is_the_source_down_and_one_log_line(
        slurmrestd: JsonServer, tmp_path: Path, ca_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    slurmrestd.routes[JOBS_PATH] = b"<html><body>502 Bad Gateway</body></html>"
    src = source(slurmrestd, tmp_path, ca_file)
    assert src.poller is not None
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert not src.poller.poll_once()
    with pytest.raises(SourceError, match="the answer is not JSON"):
        src.holdings(time.time(), GPUS)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"slurmrestd {slurmrestd.url}: read failed: GET {JOBS_PATH}: the answer is not JSON "
        "(retrying with backoff)"]


@pytest.mark.parametrize(("answer", "problem"), [
    ([], "not a JSON object"),
    ({"meta": {}, "errors": [], "warnings": []}, "no jobs list"),
    ({"jobs": [], "errors": [{"description": "Unable to query jobs", "error_number": 1007,
                               "error": "Protocol authentication error", "source": "slurm_load_jobs()"}]},
     "Unable to query jobs"),
])
def test_answers_that_are_not_a_jobs_list_fail_the_read(answer: Any, problem: str) -> None:
    with pytest.raises(SourceError, match=problem):
        jobs_on_node(answer, NODE)


def test_a_version_slurmrestd_does_not_serve_is_said(slurmrestd: JsonServer, tmp_path: Path,
                                                     ca_file: Path) -> None:
    rest = SlurmrestdSettings(url=slurmrestd.url, token_file=token_file(tmp_path), node=NODE,
                              user="wattledger", ca_file=ca_file, version="v0.0.46")
    src = SlurmSource(SlurmSettings(rest=rest))
    assert src.poller is not None and not src.poller.poll_once()
    assert src.poller.last_error is not None and "404" in src.poller.last_error
    assert "does this slurmrestd serve v0.0.46?" in src.poller.last_error


def test_no_token_file_means_the_source_is_off(slurmrestd: JsonServer, tmp_path: Path) -> None:
    rest = SlurmrestdSettings(url=slurmrestd.url, token_file=tmp_path / "missing.jwt", node=NODE)
    with pytest.raises(SourceUnavailable, match="slurmrestd token: cannot read"):
        SlurmSource(SlurmSettings(rest=rest)).open()


def test_entries_slurmrestd_may_hold() -> None:
    base = recorded()["jobs"][0]
    assert jobs_on_node({"jobs": [base]}, "gpu-node-02")[0].gpus == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    odd = [{**base, "job_state": "RUNNING"},  # a bare string (older plugins): the same
           {**base, "job_id": 9, "start_time": T, "gres_detail": ["gpu:a100:1(IDX:5),nic:1(IDX:0)"]},
           {**base, "job_id": 10, "gres_detail": ["gpu:2(CNT:2)"]},  # a count, no index: left out
           {**base, "job_id": 11, "gres_detail": []},  # fewer entries than nodes: left out
           {**base, "job_id": 12, "job_state": ["COMPLETED"], "end_time": {"set": False, "infinite": False,
                                                                             "number": 0}},
           {**base, "job_id": 13, "nodes": "gpu-node-[01-"},  # a broken hostlist: left out
           {**base, "job_id": "14"}, {**base, "job_id": 15, "job_state": [{"RUNNING": True}]},
           {**base, "job_id": 16, "gres_detail": [{"gpu": 1}, "gpu:1(IDX:0)"]}, "not a job"]
    got = {j.job: (j.gpus, j.since) for j in jobs_on_node({"jobs": odd}, NODE)}
    assert got == {"48213": ({0: 1.0, 1: 1.0}, T), "9": ({5: 1.0}, T)}


def test_hostlists_expand_as_slurm_writes_them() -> None:
    assert expand_hostlist("gpu-node-[01-03,07],login1") == [
        "gpu-node-01", "gpu-node-02", "gpu-node-03", "gpu-node-07", "login1"]
    assert expand_hostlist("r[1-2]n[8-10]") == ["r1n8", "r1n9", "r1n10", "r2n8", "r2n9", "r2n10"]
    assert expand_hostlist("n[9-10]") == ["n9", "n10"] and expand_hostlist("") == []
    for bad in ("n[1-2", "n1-2]", "n[a-b]", "n[3-1]", "n[[1]]"):
        with pytest.raises(ValueError):
            expand_hostlist(bad)
    with pytest.raises(ValueError):
        expand_hostlist("n[0-99999]")  # more names than any cluster has


def test_gres_detail_and_timestamps() -> None:
    assert gpu_weights("gpu:h100:2(IDX:0-1),gpu:h200:4(IDX:2-5)") == {i: 1.0 for i in range(6)}
    assert gpu_weights("gpu:4(IDX:0,2,5-6)") == {0: 1.0, 2: 1.0, 5: 1.0, 6: 1.0}
    assert gpu_weights("mps:50(50/100,0/100)") == {0: 50.0}
    assert gpu_weights("shard:2(1/4,1/4)") == {0: 1.0, 1: 1.0}
    assert gpu_weights("") == {} and gpu_weights("gpu(CNT:2)") == {} and gpu_weights("gpu:1(IDX:N/A)") == {}
    assert gpu_weights("gpu:a100_3g.40gb:1(IDX:4),gpu:a100:1(IDX:0)") == {0: 1.0}  # a MIG instance: left out
    assert timestamp({"set": True, "infinite": False, "number": 1796000000}) == T
    assert timestamp(1796000000) == T  # the +complex mode's bare number
    assert timestamp({"set": False, "infinite": False, "number": 5}) is None
    assert timestamp({"set": True, "infinite": True, "number": 5}) is None
    assert timestamp(None) is None and timestamp(True) is None and timestamp(0) is None



def test_an_answer_over_the_bound_fails_the_read(slurmrestd: JsonServer, tmp_path: Path,
                                                 ca_file: Path) -> None:
    size = len(json.dumps(recorded()).encode())  # what the server sends
    rest = SlurmrestdSettings(url=slurmrestd.url, token_file=token_file(tmp_path), node=NODE,
                              user="wattledger", ca_file=ca_file, max_bytes=size - 1)
    src = SlurmSource(SlurmSettings(rest=rest))
    assert src.poller is not None and not src.poller.poll_once()
    assert f"answer over {size - 1} bytes" in (src.poller.last_error or "")
    exact = SlurmSource(SlurmSettings(rest=replace(rest, max_bytes=size)))
    assert exact.poller is not None and exact.poller.poll_once()


def test_a_node_whose_name_is_not_in_the_hostlist_text_is_not_expanded() -> None:
    job = {**recorded()["jobs"][0], "nodes": "login[0-99999]"}  # would not expand: never tried
    assert jobs_on_node({"jobs": [job]}, NODE) == []
    assert jobs_on_node({"jobs": [{**job, "nodes": "gpu-node-0[1-2]"}]}, NODE)[0].gpus == {0: 1.0, 1: 1.0}
