"""Sources beyond the GPUs in a real agent process delivering to a real collector process:
the allocation sources (``kubernetes`` against a fake kubelet, a real gRPC server on a unix
socket; ``slurm`` over the files the shipped prolog and epilog write, and asking a slurmrestd
that serves a recorded answer over HTTPS) and the node's BMC
(``redfish`` against the Redfish test server). A recording proxy between them keeps every
body the agent sent and every answer. Each test holds: the collector accepted every batch
(200, and readings in the ledger == readings the agent took, nothing left spooled or
dead-lettered), and the batches carry what the source saw (allocations with their owners,
the node and inlet devices)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from tests.agent.fake_kubelet import FakeKubelet, pod
from tests.agent.json_server import JsonServer, tls_for
from tests.agent.redfish_bmc import FakeBmc
from tests.agent.test_slurm import epilog, prolog
from tests.agent.test_slurmrestd import JOBS_PATH, recorded
from tests.agent.test_slurmrestd import TOKEN as JWT
from tests.delivery.e2e import Agent, Collector, Proxy, sent_batches, wait_until
from wattledger.agent.sources.simulated import fake_uuid

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NODE, TOKEN = "src-node", "src-token"
GPU0, GPU1 = fake_uuid(NODE, 0, 0), fake_uuid(NODE, 1, 0)  # the agent's two simulated GPUs


class Site:
    """A collector behind a recording proxy, and the agent of the test (one at a time)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.collector = Collector(workdir, {NODE: TOKEN})
        self.collector.start()
        self.proxy = Proxy(self.collector.port)
        self.agent: Agent | None = None

    def start_agent(self, *flags: str) -> Agent:
        self.agent = Agent(self.workdir, NODE, self.proxy.url, TOKEN, interval=0.25, batch_seconds=0.5,
                           extra=flags)
        self.agent.start()
        return self.agent

    def batches(self) -> list[dict[str, Any]]:
        return sent_batches(list(self.proxy.bodies))

    def close(self) -> None:
        if self.agent is not None:
            self.agent.cleanup()
        self.proxy.close()
        self.collector.cleanup()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


def allocations(batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every allocation the batches carried, its devices as ids (a batch gives positions)."""
    out = []
    for b in batches:
        ids = [d["id"] for d in b["devices"]]
        out += [{**a, "devices": sorted(ids[p] for p in a["devices"])} for a in b.get("allocations", [])]
    return out


def owners(batches: list[dict[str, Any]], key: str) -> list[str]:
    """The ``key`` of the owner of each allocation the batches carried (pod, job)."""
    return [a["owner"][key] for a in allocations(batches)]


def readings_of(batch: dict[str, Any], device: str) -> list[float]:
    ids = [d["id"] for d in batch["devices"]]
    return [t for p, t in zip(batch["readings"]["device"], batch["readings"]["ts"], strict=True)
            if ids[p] == device]


def stop_and_check_everything_accepted(site: Site) -> None:
    """Every reading the agent took is in the ledger once; every batch was answered 200."""
    agent = site.agent
    assert agent is not None
    readings, shipped, spooled = agent.stop()
    assert spooled == 0 and shipped == readings > 0
    assert site.collector.readings(NODE) == readings
    assert site.proxy.statuses and set(site.proxy.statuses) == {200}, site.proxy.statuses
    once = {(b["stream"], b["seq"]): len(b["readings"]["ts"]) for b in site.batches()}  # a re-send: once
    assert sum(once.values()) == readings
    conn = sqlite3.connect(f"file:{agent.spool / 'spool.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    finally:
        conn.close()


def carried_while_held(batches: list[dict[str, Any]], device: str, owner: dict[str, str]) -> int:
    """How many batches with readings of ``device`` came after the allocation of ``owner`` was
    last carried. It is carried by every batch with a reading of ``device`` from its start on,
    up to the last that carries it (an allocation that ended is carried by the batches whose
    spans it overlaps: its end is the last sample that saw it held, so the batch with that
    sample is the last), and by none after it."""
    carried = [any(a["owner"] == owner for a in allocations([b])) for b in batches]
    assert any(carried), owner
    first = min(a["from"] for a in allocations(batches) if a["owner"] == owner)
    last = max(i for i, c in enumerate(carried) if c)
    after = 0
    for i, b in enumerate(batches):
        ts = readings_of(b, device)
        if i <= last and any(t > first for t in ts):
            assert carried[i], (b["seq"], owner)
        after += i > last and bool(ts)
    return after


def test_kubernetes_pods_ride_the_batches_to_the_collector(tmp_path: Path, site: Site) -> None:
    kubelet = FakeKubelet(tmp_path / "kubelet.sock").start()
    try:
        kubelet.pods = [pod("nlp", "llama-ft-7", {"trainer": [("nvidia.com/gpu", [GPU0])]}),
                        pod("vision", "eval-3", {"main": [("nvidia.com/gpu", [GPU1])]}),
                        pod("web", "frontend", {"nginx": []})]  # no accelerator: no holding
        agent = site.start_agent("--sources", "simulated,host,kubernetes",
                                 "--kubelet-socket", str(kubelet.socket), "--kubernetes-interval", "0.2")
        wait_until("both pods in a batch", lambda: len(set(owners(site.batches(), "pod"))) == 2)
        assert agent.metric("wattledger_agent_source_up", source="kubernetes") == 1.0
        kubelet.pods = kubelet.pods[:1]  # eval-3 finished
        wait_until("batches without eval-3", lambda: owners(site.batches()[-3:], "pod") == ["llama-ft-7"] * 3)
        stop_and_check_everything_accepted(site)
    finally:
        kubelet.stop()
    batches = site.batches()
    nlp = {"namespace": "nlp", "pod": "llama-ft-7", "container": "trainer"}
    vision = {"namespace": "vision", "pod": "eval-3", "container": "main"}
    held = {(a["owner"]["pod"], a["from"]): a for a in allocations(batches)}  # the latest state of each
    (train,) = [a for (p, _), a in held.items() if p == "llama-ft-7"]
    (ev,) = [a for (p, _), a in held.items() if p == "eval-3"]
    assert (train["devices"], train["owner"], train["weight"]) == ([GPU0], nlp, 1.0)
    assert (ev["devices"], ev["owner"]) == ([GPU1], vision) and (ev["to"] is None or ev["to"] >= ev["from"])
    assert train["to"] is None and carried_while_held(batches, GPU0, nlp) == 0
    assert carried_while_held(batches, GPU1, vision) >= 3  # eval-3 is over: GPU1 reports on, unheld


def test_slurm_jobs_of_the_shipped_prolog_ride_the_batches(tmp_path: Path, site: Site) -> None:
    jobs = tmp_path / "slurm-jobs"
    prolog(jobs, "48213", "0")  # by index (SLURM_JOB_GPUS), as slurmd gives it
    prolog(jobs, "48214", GPU1, SLURM_JOB_ACCOUNT="nlp", SLURM_JOB_USER="ana")  # by UUID (env_uuid)
    started = {job: float(dict(line.split("=", 1) for line in (jobs / "jobs" / job).read_text().splitlines())
                          ["start"]) for job in ("48213", "48214")}
    site.start_agent("--sources", "simulated,slurm", "--slurm-job-dir", str(jobs))
    wait_until("both jobs in a batch", lambda: len(set(owners(site.batches(), "job"))) == 2)
    epilog(jobs, "48214", GPU1)
    wait_until("batches without job 48214", lambda: owners(site.batches()[-3:], "job") == ["48213"] * 3)
    stop_and_check_everything_accepted(site)
    batches = site.batches()
    held = {a["owner"]["job"]: a for a in allocations(batches)}
    first, second = held["48213"], held["48214"]
    assert first["devices"] == [GPU0] and first["to"] is None
    assert first["owner"] == {"job": "48213", "account": "vision", "user": "kim", "partition": "h100"}
    assert second["devices"] == [GPU1] and second["owner"]["account"] == "nlp"
    assert second["owner"]["user"] == "ana"
    # the prolog's start (before the agent started), not when the agent first saw the job
    assert (first["from"], second["from"]) == (started["48213"], started["48214"])
    assert carried_while_held(batches, GPU0, first["owner"]) == 0
    assert carried_while_held(batches, GPU1, second["owner"]) >= 3


def test_slurmrestd_jobs_ride_the_batches_and_a_failing_slurmrestd_stops_none(tmp_path: Path,
                                                                             site: Site) -> None:
    ca = trustme.CA()
    ca_file, jwt = tmp_path / "ca.pem", tmp_path / "slurmrestd.jwt"
    ca.cert_pem.write_to_path(str(ca_file))
    jwt.write_text(JWT + "\n")
    answer = recorded()  # job 48213 holds GPUs 0-1 of gpu-node-01 (the others: GPUs it lacks, other nodes)
    started = int(time.time()) - 600  # the recording's clock moved to now: started before the agent
    answer["jobs"][0]["start_time"] = {"set": True, "infinite": False, "number": started}
    server = JsonServer({JOBS_PATH: answer}, tls=tls_for(ca), required={"X-SLURM-USER-TOKEN": JWT})
    try:
        agent = site.start_agent("--sources", "simulated,slurm", "--slurmrestd-url", server.url,
                                 "--slurmrestd-token-file", str(jwt), "--slurmrestd-ca-file", str(ca_file),
                                 "--slurmrestd-node", "gpu-node-01", "--slurmrestd-interval", "0.2")
        wait_until("job 48213 in a batch", lambda: "48213" in owners(site.batches(), "job"))
        assert agent.metric("wattledger_agent_source_up", source="slurm") == 1.0
        # an end a little ahead, so that batches cut after the agent learns of it still span it
        # (batches already sent keep the job as they carried it: open, up to one poll late)
        ended = time.time() + 3.0
        job = {**answer["jobs"][0], "job_state": ["COMPLETED"],
               "end_time": {"set": True, "infinite": False, "number": int(ended)}}
        server.routes[JOBS_PATH] = {**answer, "jobs": [job]}
        wait_until("job 48213 closed", lambda: any(a["to"] is not None for a in allocations(site.batches())))
        server.down = True  # 503 from now on: the source is down, the readings go on
        wait_until("slurm down", lambda: agent.metric("wattledger_agent_source_up", source="slurm") == 0.0)
        wait_until("batches after the job's end", lambda: sum(
            1 for b in site.batches() if min(readings_of(b, GPU0), default=0.0) > ended) >= 3)
        stop_and_check_everything_accepted(site)
    finally:
        server.close()
    batches = site.batches()
    owner = {"job": "48213", "account": "vision", "user": "kim", "partition": "h100"}
    spans = {(a["from"], a["to"]) for a in allocations(batches)}
    assert all(a["owner"] == owner and a["devices"] == sorted([GPU0, GPU1]) for a in allocations(batches))
    # slurmrestd's start_time (before the agent started); the end slurmrestd gave, to the second
    assert spans <= {(float(started), None), (float(started), float(int(ended)))}
    assert (float(started), float(int(ended))) in spans
    assert carried_while_held(batches, GPU0, owner) >= 3


def test_redfish_node_and_inlet_reach_the_ledger(tmp_path: Path, site: Site) -> None:
    bmc = FakeBmc("public-rackmount1")
    password = tmp_path / "bmc-password"
    password.write_text("s3cret-pw\n")
    try:
        site.start_agent("--sources", "simulated,redfish", "--redfish-url", bmc.url,
                         "--redfish-user", "monitor", "--redfish-password-file", str(password),
                         "--redfish-interval", "0.3")
        wait_until("the node's wall power in batches", lambda: sum(
            1 for b in site.batches() for d in b["devices"] if d["kind"] == "node") >= 3)
        stop_and_check_everything_accepted(site)
    finally:
        bmc.close()
    kinds = {(d["kind"], d.get("role")) for b in site.batches() for d in b["devices"]}
    assert kinds == {("gpu", None), ("node", None), ("sensor", "inlet")}
    node = {d["id"] for d in site.collector.node(NODE)["devices"]}
    assert {GPU0, GPU1} < node and len(node) == 4  # the GPUs, the node at the wall, its inlet sensor
