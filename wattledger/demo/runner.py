"""The demo's run: prepare the state folder, start the children, backfill, show, stop.

Order of events:

1. the state folder is made (``--fresh`` wipes it) and locked against a second demo;
2. the collector starts on the generated YAML, and the demo waits for its ``/healthz``;
3. Prometheus starts, when its binary is on PATH (else one line says how to get it);
4. the backfill runs in a thread while the view already shows what the collector has;
5. when the history has caught up with now, the live agents start (so that the ledger sees
   every device's readings in time order: history first, then live);
6. on Ctrl-C / SIGTERM: backfill stopped, agents stopped first (they ship what they spooled),
   then Prometheus, then the collector; exit 0.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx
from rich.console import Console
from rich.live import Live

from wattledger.config import ConfigError
from wattledger.demo import config as democonfig
from wattledger.demo.backfill import NodePlan, Progress, run_backfill
from wattledger.demo.fetch import Fetcher, servers_from_nodes
from wattledger.demo.layout import DemoState, Ports, choose_ports
from wattledger.demo.processes import Child, Supervisor
from wattledger.demo.scenario import Scenario, default_scenario
from wattledger.demo.snapshot import BackfillState, Snapshot, Urls
from wattledger.demo.view import plain_lines, render

log = logging.getLogger(__name__)

COLLECTOR_START_TIMEOUT_S = 60.0
AGENT_STOP_TIMEOUT_S = 13.0  # an agent ships what it spooled for up to 10 s
PROMETHEUS_STOP_TIMEOUT_S = 5.0
COLLECTOR_STOP_TIMEOUT_S = 10.0
INSTALL_PROMETHEUS = "Prometheus is not installed, so no alert rules run: apt-get install prometheus"


class Demo:
    def __init__(self, settings: dict[str, Any], scenario: Scenario | None = None,
                 console: Console | None = None, clock: Callable[[], float] = time.time,
                 observer: Callable[[Snapshot], bool] | None = None) -> None:
        """``observer`` sees every snapshot shown; when it returns True the demo stops (as on
        Ctrl-C). The README picture is taken this way."""
        self.s = settings
        self.observer = observer
        self.scenario = scenario or default_scenario()
        self.console = console or Console()
        self.clock = clock
        self.interactive = self.console.is_terminal and not settings["plain"]
        self.refresh = settings["refresh"] or (1.0 if self.interactive else 5.0)
        self.state = DemoState(Path(settings["state_dir"]))
        self.sup = Supervisor()
        self.stop = threading.Event()
        self.backfill_stop = threading.Event()
        self.progress = Progress()
        self.backfill_thread: threading.Thread | None = None
        self.notes: list[str] = []
        self.agents_started = False
        self.collector: Child | None = None
        self.prometheus: Child | None = None
        self._lock_file: IO[str] | None = None
        self._signals = 0
        self._output_gone = False
        self.last: Snapshot | None = None  # what the view showed last

    # ------------------------------------------------------------------ output

    def say(self, line: str) -> None:
        """One line for the operator (stdout), readable both on a terminal and in a log."""
        if self._output_gone:
            return
        try:
            if self.interactive:
                self.console.print(line, highlight=False, markup=False)
            else:
                print(line, flush=True)
        except OSError:  # stdout closed (`| head`) or its terminal hung up: stop, as `yes | head` does
            self._output_gone = True
            self.stop.set()

    # ------------------------------------------------------------------ set-up

    def prepare(self) -> Ports:
        self._lock_state()
        self.state.prepare(self.s["fresh"])
        servers = self.scenario.servers
        ports = choose_ports([s.node for s in servers], self.s["collector_port"],
                             self.s["prometheus_port"], self.s["agent_port"])
        tokens = self.state.tokens(s.node for s in servers)
        democonfig.write_collector_files(self.scenario, self.state, ports, tokens, self.clock())
        democonfig.write_yaml(self.state.plan_scenario, democonfig.plan_scenario(self.scenario, self.clock()))
        return ports

    def _lock_state(self) -> None:
        """Hold the state folder; with the default folder in use by another demo, take demo-2,
        demo-3, ... (a folder given with --state-dir is that folder or nothing)."""
        root = self.state.root
        folders = [root] if self.s.get("state_dir_given") else [
            root, *(root.with_name(f"{root.name}-{i}") for i in range(2, 10))]
        for folder in folders:
            state = DemoState(folder)
            held = state.lock()
            if held is not None:
                self._lock_file = held
                if folder != root:
                    self.say(f"another wattledger demo is running on {root}; this one uses {folder}")
                self.state = state
                return
        raise ConfigError(f"another wattledger demo is running on {str(root)!r} "
                          "(stop it, or give this one another --state-dir)")

    def prometheus_binary(self) -> str | None:
        return None if self.s["no_prometheus"] else shutil.which("prometheus")

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        self.stop.set()
        self.backfill_stop.set()
        if self._signals > 1:  # asked twice: no more waiting for graceful stops
            self.sup.kill_all()

    def _install_signals(self) -> dict[int, Any]:
        old: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, self._on_signal)
        return old

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        ports = self.prepare()
        old = self._install_signals()
        # httpx logs every request at INFO; the view polls every second
        logging.getLogger("httpx").setLevel(logging.WARNING)
        try:
            return self._run(ports)
        finally:
            self._shutdown()
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if self._lock_file is not None:
                self._lock_file.close()

    def _run(self, ports: Ports) -> int:
        collector_url = democonfig.collector_url(ports)
        self.say(f"wattledger demo: state in {self.state.root} (logs in {self.state.logs})")
        self.say(f"starting the collector on {collector_url}")
        self.collector = self.sup.start("collector", "wattledger", democonfig.collector_args(self.state),
                                        self.state.log("collector"))
        if not self._wait_collector(collector_url):
            return 0 if self.stop.is_set() else 1

        prometheus_url = self._start_prometheus(ports)
        plans = self._backfill_plans(collector_url)
        if plans and not self.s["no_backfill"]:
            month_start = self.scenario.site.month_start(self.clock())
            since = ("the first of the month" if min(p.start for p in plans) <= month_start
                     else "the ledger's last readings")
            self.say(f"backfilling simulated history since {since} through POST /v1/batches")
            end = self.clock()
            self.backfill_thread = threading.Thread(
                target=run_backfill, name="backfill", daemon=True,
                args=(plans, collector_url, end, self.s["backfill_step"], self.progress,
                      self.backfill_stop))
            self.backfill_thread.start()
        else:
            self.progress.done = True
            self._start_agents(ports)

        provisioning = democonfig.grafana_provisioning()
        if provisioning is not None and provisioning.is_relative_to(Path.cwd()):
            provisioning = provisioning.relative_to(Path.cwd())  # as `make demo` users see it
        urls = Urls(collector_url, prometheus_url, str(provisioning) if provisioning else None)
        fetcher = Fetcher(collector_url, prometheus_url, self.scenario)
        try:
            return self._show(ports, urls, fetcher)
        finally:
            fetcher.close()

    def _wait_collector(self, url: str) -> bool:
        deadline = time.monotonic() + COLLECTOR_START_TIMEOUT_S
        assert self.collector is not None
        while not self.stop.is_set():
            if not self.collector.running():
                self.collector.reported = True
                self.say(f"demo: the collector exited at start (exit {self.collector.proc.returncode}): "
                         f"{self.collector.last_line() or 'no output'} (log: {self.collector.log_path})")
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    return True
            if time.monotonic() > deadline:
                self.say(f"demo: the collector did not answer on {url} within "
                         f"{COLLECTOR_START_TIMEOUT_S:.0f} s (log: {self.collector.log_path})")
                return False
            self.stop.wait(0.2)
        return False

    def _start_prometheus(self, ports: Ports) -> str | None:
        binary = self.prometheus_binary()
        if binary is None:
            if not self.s["no_prometheus"]:
                self.say(INSTALL_PROMETHEUS)
            return None
        rules = democonfig.rules_files()
        cfg = democonfig.prometheus_config(self.scenario, ports, rules)
        democonfig.write_yaml(self.state.prometheus_dir / "prometheus.yml", cfg)
        url = democonfig.prometheus_url(ports)
        self.say(f"starting Prometheus on {url} with {len(rules)} rule file(s)")
        self.prometheus = self.sup.start("prometheus", binary,
                                         democonfig.prometheus_args(binary, self.state, ports)[1:],
                                         self.state.log("prometheus"))
        return url

    def _backfill_plans(self, collector_url: str) -> list[NodePlan]:
        """Where each node's history starts: the first of the month (site time), or just after
        what the ledger already holds for it (a demo started again without --fresh)."""
        now = self.clock()
        month_start = self.scenario.site.month_start(now)
        last: dict[str, float] = {}
        fetcher = Fetcher(collector_url, None, self.scenario)
        try:
            for row in servers_from_nodes(fetcher.nodes(), self.scenario):
                if row.last_seen is not None:
                    last[row.node] = row.last_seen
        except (httpx.HTTPError, ValueError) as exc:
            # then the whole month goes again; readings the ledger already holds are late for it
            # (not after its latest reading of that device): dropped and counted, never added twice
            log.debug("cannot read the ledger's nodes: %s", exc)
        finally:
            fetcher.close()
        tokens = self.state.tokens(s.node for s in self.scenario.servers)
        plans = []
        for server in self.scenario.servers:
            start = max(month_start, last.get(server.node, month_start - 1) + 1.0)
            if now - start > self.s["backfill_step"]:
                held = ([] if server.job is None else
                        [democonfig.job_allocation(server.job, server.gpus, month_start)])
                plans.append(NodePlan(server, server.labels(self.scenario.site.name),
                                      tokens[server.node], start, held))
        return plans

    def _start_agents(self, ports: Ports) -> None:
        self.agents_started = True
        month_start = self.scenario.site.month_start(self.clock())
        for server in self.scenario.servers:
            # the job holds the server's GPUs since the month began, as the backfill says too
            democonfig.write_slurm_jobs(self.state.slurm_jobs(server.node), server, month_start)
            self.sup.start(f"agent {server.node}", "wattledger",
                           democonfig.agent_args(self.scenario, server, self.state, ports),
                           self.state.log(f"agent-{server.node}"))

    # ------------------------------------------------------------------ the loop

    def _show(self, ports: Ports, urls: Urls, fetcher: Fetcher) -> int:
        if not self.interactive:
            return self._loop(ports, urls, fetcher, lambda snap: self.say("\n".join(plain_lines(snap))))
        with Live(console=self.console, auto_refresh=False, screen=True, transient=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            rc = self._loop(ports, urls, fetcher, lambda snap: live.update(render(snap), refresh=True))
        if self.last is not None:  # what the screen showed last, kept in the scrollback
            self.console.print(render(self.last))
        return rc

    def _loop(self, ports: Ports, urls: Urls, fetcher: Fetcher, show: Callable[[Snapshot], None]) -> int:
        while not self.stop.is_set():
            if not self._supervise(ports):
                return 1
            snap = self._snapshot(urls, fetcher)
            self.last = snap
            show(snap)
            if self.observer is not None and self.observer(snap):
                self.stop.set()
                break
            self.stop.wait(self.refresh)
        return 0

    def _supervise(self, ports: Ports) -> bool:
        """Start the agents once the backfill is over; report a child that died. False: the
        collector died, and the demo cannot go on."""
        thread = self.backfill_thread
        if not self.agents_started and (thread is None or not thread.is_alive()):
            p = self.progress
            if p.error:
                self._note(f"backfill failed: {p.error}")
            elif thread is not None:
                self.say(f"backfill done: {p.sent:,} readings; starting the live agents")
            self._start_agents(ports)
        for child in self.sup.newly_dead():
            line = child.last_line() or "no output"
            self._note(f"{child.name} exited unexpectedly (exit {child.proc.returncode}): {line[-160:]} "
                       f"(log: {child.log_path})")
            if child is self.collector:
                return False
        return True

    def _note(self, line: str) -> None:
        self.notes.append(line)
        if self.interactive:
            return  # shown in the view's header
        self.say(f"demo: {line}")

    def _snapshot(self, urls: Urls, fetcher: Fetcher) -> Snapshot:
        servers, sites, problem = fetcher.collector_figures()
        alerts, prom_problem = None, None
        if self.prometheus is not None and self.prometheus.running():  # a dead one is a note already
            alerts, prom_problem = fetcher.alerts()
        notes = list(self.notes)
        for extra in (problem, prom_problem):
            if extra:
                notes.append(extra)
        p = self.progress
        backfill = None
        if self.backfill_thread is not None:
            backfill = BackfillState(p.fraction, p.sent, p.done or not self.backfill_thread.is_alive(),
                                     p.error, p.until)
        return Snapshot(at=self.clock(), urls=urls, servers=servers, sites=sites, alerts=alerts,
                        backfill=backfill, notes=notes)

    # ------------------------------------------------------------------ shutdown

    def _shutdown(self) -> None:
        self.backfill_stop.set()
        if self.backfill_thread is not None:
            self.backfill_thread.join(timeout=35)
        agents = [c for c in self.sup.children if c.name.startswith("agent")]
        if not self.sup.children:
            return
        then = ", then Prometheus" if self.prometheus is not None else ""
        self.say(f"stopping: the agents first (they ship what they spooled){then}, then the collector")
        self._stop_and_report(agents, AGENT_STOP_TIMEOUT_S, "stopped:")
        if self.prometheus is not None:
            self._stop_and_report([self.prometheus], PROMETHEUS_STOP_TIMEOUT_S, "")
        if self.collector is not None:
            self._stop_and_report([self.collector], COLLECTOR_STOP_TIMEOUT_S, "")
        self.say(f"demo stopped; its state is kept in {self.state.root} (--fresh starts afresh)")
        self.say(f"plan the next servers from its ledger: {democonfig.plan_command(self.state)}")

    def _stop_and_report(self, children: list[Child], timeout: float, summary: str) -> None:
        killed = self.sup.stop(children, timeout)
        for child in children:
            if child in killed:
                self.say(f"  {child.name}: did not stop within {timeout:.0f} s, killed")
            elif summary and (line := child.last_line(summary)):
                self.say(f"  {child.name}: {line[line.index(summary):]}")
            elif child.proc.returncode == 0 or (child is self.collector
                                                 and child.proc.returncode == -signal.SIGTERM):
                self.say(f"  {child.name}: stopped")  # (uvicorn re-raises the SIGTERM it handled)
            else:
                self.say(f"  {child.name}: stopped (exit {child.proc.returncode})")

