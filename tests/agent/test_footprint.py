"""The agent stays light: it never loads pydantic, numpy, FastAPI or httpx (docs/agent.md,
"Cost"; the budget is < 50 MB RSS). Checked in a fresh interpreter (this test process has
loaded them all): on import of every agent module, and through a real run — the
dispatcher's parser, the settings, sampling, a scrape and batches delivered to a stub."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from agent.stub_collector import StubCollector

HEAVY = ("pydantic", "pydantic_core", "numpy", "fastapi", "httpx")
LOADED = f"sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})"
AGENT_MODULES = ("wattledger.agent.cli", "wattledger.agent.runtime", "wattledger.agent.shipper",
                 "wattledger.agent.spool", "wattledger.agent.delivery", "wattledger.agent.exposition",
                 "wattledger.agent.sources.nvml", "wattledger.agent.sources.simulated",
                 "wattledger.agent.sources.host", "wattledger.agent.sources.redfish",
                 "wattledger.agent.sources.ipmi", "wattledger.agent.sources.snmp",
                 "wattledger.agent.sources.modbus", "wattledger.agent.remote_cli")


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_no_agent_module_imports_the_heavy_libraries() -> None:
    loaded = run_python(f"import sys, {', '.join(AGENT_MODULES)}; print({LOADED})")
    assert loaded.strip() == "[]"


def test_a_delivering_agent_run_loads_none_of_them(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-1\n")
    collector = StubCollector("tok-1")
    argv = ["agent", "--simulate", "2", "--node", "n1", "--listen", "127.0.0.1:0", "--interval", "0.1",
            "--collector", collector.url, "--token-file", str(token), "--spool", str(tmp_path / "spool"),
            "--batch-seconds", "0.2", "--label", "site=s1"]
    code = textwrap.dedent(f"""
        import json, sys, time, urllib.request
        from wattledger import cli
        from wattledger.agent import cli as agent_cli

        argv = {argv!r}
        agent = agent_cli.build_agent(agent_cli.settings(cli.build_parser(cli.command_named(argv))
                                                         .parse_args(argv)))
        agent.start()
        end = time.monotonic() + 20
        while time.monotonic() < end and not agent.delivery.shipper.shipped_readings:
            time.sleep(0.05)
        port = agent._server.server_port
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{{port}}/metrics", timeout=5).read()
        summary = agent.stop(delivery_timeout=5)
        print(json.dumps({{"shipped": summary.shipped, "scraped": len(scraped), "heavy": {LOADED}}}))
    """)
    try:
        result = json.loads(run_python(code).splitlines()[-1])
    finally:
        collector.close()
    assert result["shipped"] > 0 and result["shipped"] == collector.readings and result["scraped"] > 0
    assert result["heavy"] == []
