"""The AMD and Gaudi sources in a real ``wattledger agent`` process on a machine without their
libraries (this one: no ROCm, no Habana driver, neither Python package installed): one line
each, /metrics goes on with ``source_up`` 0 for them and the host source up; and the vendor
modules are imported only when a source opens, never by the agent's own imports."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.test_integration import Agent


def vendor_installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


@pytest.mark.integration
def test_without_the_vendor_stacks_one_line_each_and_metrics_go_on(tmp_path: Path) -> None:
    agent = Agent(tmp_path, "--sources", "amdsmi,hlml,host", "--interval", "0.2", "--node", "bare-amd")
    try:
        metrics = agent.scrape()
        time.sleep(1.0)  # several samples: the line is said once, not every sample
        metrics = agent.scrape()
        up = {labels["source"]: v for labels, v in metrics["wattledger_agent_source_up"]}
        if up.get("amdsmi") == 1.0 or up.get("hlml") == 1.0:
            pytest.skip("this machine has an AMD or Gaudi driver")
        assert up == {"amdsmi": 0.0, "hlml": 0.0, "host": 1.0}
        assert "wattledger_host_cpu_utilization_ratio" in metrics
        assert "wattledger_gpu_power_watts" not in metrics
        assert agent.stop() == 0
    finally:
        agent.stop()
    log = agent.log.read_text()
    assert "Traceback" not in log
    amd = [line for line in log.splitlines() if "amdsmi" in line.lower() and "sources amdsmi" not in line]
    gaudi = [line for line in log.splitlines() if "hlml" in line and "sources amdsmi" not in line]
    assert len(amd) == 1 and "no AMD GPU driver (amdsmi): " in amd[0], amd
    assert len(gaudi) == 1 and "no Intel Gaudi driver (hlml): " in gaudi[0], gaudi
    if not vendor_installed("amdsmi"):
        assert "the Python package 'amdsmi' is not installed" in amd[0]
    assert "libamd_smi.so library try installing" not in log  # what amdsmi prints is kept out


def test_the_vendor_modules_are_imported_only_when_a_source_opens() -> None:
    code = (
        "import sys\n"
        "from wattledger.agent.sources import SourceSettings, build_sources\n"
        "import wattledger.agent.sources.amdsmi, wattledger.agent.sources.hlml\n"
        "sources = build_sources(['amdsmi', 'hlml'], SourceSettings(node='n1'))\n"
        "heavy = ('amdsmi', 'pyhlml', 'pydantic', 'numpy', 'fastapi', 'httpx')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert json.loads(out.stdout) == []
