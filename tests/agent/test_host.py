"""The host source over a fake sysfs tree: RAPL domains, wrap-around, unreadable counters."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from wattledger.agent.sources.host import HostSource

TS = 1_764_000_000.0
RANGE = 262_143_328_850  # a real package's max_energy_range_uj


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = RANGE) -> Path:
    d = root / "class" / "powercap" / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy_uj}\n")
    (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return d


def set_energy(d: Path, energy_uj: int) -> None:
    (d / "energy_uj").write_text(f"{energy_uj}\n")


def host(root: Path, **kw: object) -> HostSource:
    memory = SimpleNamespace(total=64 << 30, available=48 << 30)
    src = HostSource("n1", sysfs_root=root, cpu_percent=lambda: 37.5, virtual_memory=lambda: memory, **kw)  # type: ignore[arg-type]
    src.open()
    return src


@pytest.fixture
def two_sockets(tmp_path: Path) -> dict[str, Path]:
    return {
        "package-0": zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000),
        "core": zone(tmp_path, "intel-rapl:0:0", "core", 500_000),
        "dram": zone(tmp_path, "intel-rapl:0:1", "dram", 200_000, max_uj=65_532_610_987),
        "package-1": zone(tmp_path, "intel-rapl:1", "package-1", 3_000_000),
    }


def test_cpu_and_memory(tmp_path: Path) -> None:
    stats = host(tmp_path).sample(TS).host
    assert stats is not None
    assert stats.cpu_util == 0.375
    assert stats.mem_used_bytes == float(16 << 30) and stats.mem_total_bytes == float(64 << 30)
    assert stats.rapl == ()


def test_rapl_counts_joules_since_start_and_power(tmp_path: Path, two_sockets: dict[str, Path]) -> None:
    src = host(tmp_path)
    first = src.sample(TS)
    assert first.host is not None
    assert {d.domain: d.energy_j for d in first.host.rapl} == {
        "package-0": 0.0,
        "package-0/core": 0.0,
        "package-0/dram": 0.0,
        "package-1": 0.0,
    }
    assert all(d.power_w is None for d in first.host.rapl)
    set_energy(two_sockets["package-0"], 1_000_000 + 150_000_000)  # 150 J in 1 s
    set_energy(two_sockets["package-1"], 3_000_000 + 100_000_000)
    second = src.sample(TS + 1)
    assert second.host is not None
    by_domain = {d.domain: d for d in second.host.rapl}
    assert by_domain["package-0"].energy_j == pytest.approx(150.0)
    assert by_domain["package-0"].power_w == pytest.approx(150.0)
    assert by_domain["package-1"].energy_j == pytest.approx(100.0)


def test_wrap_around_is_unfolded(tmp_path: Path) -> None:
    d = zone(tmp_path, "intel-rapl:0", "package-0", RANGE - 50_000_000)
    src = host(tmp_path)
    src.sample(TS)
    set_energy(d, 30_000_000)  # wrapped: 50 J to the top, then 30 J
    out = src.sample(TS + 2)
    assert out.host is not None
    assert out.host.rapl[0].energy_j == pytest.approx(80.0)
    assert out.host.rapl[0].power_w == pytest.approx(40.0)
    set_energy(d, 40_000_000)
    out = src.sample(TS + 3)
    assert out.readings[0].energy_j == pytest.approx(90.0)  # never goes back


def test_only_non_overlapping_domains_become_device_readings(
    tmp_path: Path, two_sockets: dict[str, Path]
) -> None:
    readings = host(tmp_path).sample(TS).readings
    devices = [(r.device.id, r.device.kind, r.device.index) for r in readings]
    # core is part of package-0: exposed on /metrics but never delivered (no double count)
    assert devices == [
        ("n1:rapl:package-0", "cpu", 0),
        ("n1:rapl:package-0/dram", "host", 1),
        ("n1:rapl:package-1", "cpu", 2),
    ]


def test_psys_is_delivered_only_without_packages(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:1", "psys", 10)
    assert [r.device.id for r in host(tmp_path).sample(TS).readings] == ["n1:rapl:psys"]


def test_root_only_counters_are_skipped_with_one_warning(
    tmp_path: Path, two_sockets: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    def read_text(path: Path) -> str:
        if path.name == "energy_uj" and "intel-rapl:1" in str(path):
            raise PermissionError(13, "Permission denied")
        return path.read_text()

    with caplog.at_level(logging.WARNING):
        src = host(tmp_path, read_text=read_text)
    out = src.sample(TS)
    assert out.host is not None
    assert [d.domain for d in out.host.rapl] == ["package-0", "package-0/core", "package-0/dram"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "package-1" in warnings[0] and "root" in warnings[0]


def test_a_counter_that_vanishes_is_absent_that_sample(tmp_path: Path, two_sockets: dict[str, Path]) -> None:
    src = host(tmp_path)
    src.sample(TS)
    (two_sockets["package-1"] / "energy_uj").unlink()
    out = src.sample(TS + 1)
    assert out.host is not None
    assert "package-1" not in {d.domain for d in out.host.rapl}
    assert len(out.readings) == 2
