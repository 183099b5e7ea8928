"""The shipped Slurm prolog and epilog, run as slurmd runs them (its environment, into a
folder), and the slurm source reading what they wrote; dcgm-exporter's layout alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

from wattledger.agent.sources.slurm import SlurmSettings, SlurmSource
from wattledger.contract import Device

ROOT = Path(__file__).resolve().parents[2]
PROLOG, EPILOG = ROOT / "deploy/slurm/prolog.sh", ROOT / "deploy/slurm/epilog.sh"
GPUS = [Device(id=f"GPU-{i}{i}{i}{i}aaaa-0000-0000-0000-000000000000", kind="gpu", index=i)
        for i in range(4)]


def slurmd_env(job_dir: Path, job: str, gpus: str | None, **extra: str) -> dict[str, str]:
    """What slurmd gives its Prolog/Epilog (no PATH: the scripts set their own)."""
    env = {"SLURM_JOB_ID": job, "SLURM_JOBID": job, "SLURM_JOB_USER": "kim", "SLURM_JOB_UID": "1000",
           "SLURM_JOB_ACCOUNT": "vision", "SLURM_JOB_PARTITION": "h100", "SLURMD_NODENAME": "gpu-node-01",
           "SLURM_CLUSTER_NAME": "train-a", "SLURM_SCRIPT_CONTEXT": "prolog_slurmd",
           "WATTLEDGER_SLURM_JOB_DIR": str(job_dir)}
    if gpus is not None:
        env["SLURM_JOB_GPUS"] = gpus
        env["CUDA_VISIBLE_DEVICES"] = gpus
    env.update(extra)
    return env


def run(script: Path, env: dict[str, str]) -> None:
    done = subprocess.run(["/bin/bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def prolog(job_dir: Path, job: str, gpus: str | None, **extra: str) -> None:
    run(PROLOG, slurmd_env(job_dir, job, gpus, **extra))


def epilog(job_dir: Path, job: str, gpus: str | None) -> None:
    run(EPILOG, slurmd_env(job_dir, job, gpus, SLURM_SCRIPT_CONTEXT="epilog_slurmd"))


Held = dict[str, tuple[tuple[str, ...], dict[str, str], float | None]]


def read(job_dir: Path, devices: list[Device] = GPUS) -> Held:
    src = SlurmSource(SlurmSettings(job_dir=job_dir))
    src.open()
    return {h.key: (h.device_ids, dict(h.owner), h.since) for h in src.holdings(1.0, devices)}


def test_prolog_files_are_dcgm_exporters_layout_plus_metadata(tmp_path: Path) -> None:
    prolog(tmp_path, "48213", "0,1")
    assert (tmp_path / "0").read_text() == "48213\n" and (tmp_path / "1").read_text() == "48213\n"
    meta = dict(line.split("=", 1) for line in (tmp_path / "jobs/48213").read_text().splitlines())
    assert {k: meta[k] for k in ("job", "account", "user", "partition", "gpus")} == {
        "job": "48213", "account": "vision", "user": "kim", "partition": "h100", "gpus": "0,1"}
    ((devices, owner, since),) = read(tmp_path).values()
    assert devices == (GPUS[0].id, GPUS[1].id)
    assert owner == {"job": "48213", "account": "vision", "user": "kim", "partition": "h100"}
    assert since == float(meta["start"])


def test_jobs_sharing_a_gpu_and_the_epilog_of_one(tmp_path: Path) -> None:
    prolog(tmp_path, "100", "0,2")
    prolog(tmp_path, "101", "2", SLURM_JOB_ACCOUNT="nlp", SLURM_JOB_USER="ana")
    assert (tmp_path / "2").read_text() == "100\n101\n"
    held = read(tmp_path)
    assert held["slurm:100"][0] == (GPUS[0].id, GPUS[2].id)
    assert held["slurm:101"][0] == (GPUS[2].id,) and held["slurm:101"][1]["account"] == "nlp"
    epilog(tmp_path, "100", None)  # older Slurm: no SLURM_JOB_GPUS in the Epilog
    assert not (tmp_path / "0").exists() and (tmp_path / "2").read_text() == "101\n"
    assert not (tmp_path / "jobs/100").exists()
    assert list(read(tmp_path)) == ["slurm:101"]
    epilog(tmp_path, "101", "2")
    assert read(tmp_path) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "jobs"]


def test_gpus_by_uuid_with_env_uuid(tmp_path: Path) -> None:
    mig = "MIG-5e6f7a8b-0000-0000-0000-000000000000"
    prolog(tmp_path, "7", f"{GPUS[3].id},{mig}")
    assert (tmp_path / GPUS[3].id).read_text() == "7\n"
    assert read(tmp_path)["slurm:7"][0] == tuple(sorted((GPUS[3].id, mig)))


def test_a_dcgm_exporter_folder_alone_gives_the_job_id(tmp_path: Path) -> None:
    (tmp_path / "0").write_text("48213\n")
    (tmp_path / "3").write_text("48214\n48215\n")
    (tmp_path / "README").write_text("not a GPU file\n")
    held = read(tmp_path)
    assert held == {"slurm:48213": ((GPUS[0].id,), {"job": "48213"}, None),
                    "slurm:48214": ((GPUS[3].id,), {"job": "48214"}, None),
                    "slurm:48215": ((GPUS[3].id,), {"job": "48215"}, None)}


def test_a_gpu_missing_from_one_sample_keeps_its_holding(tmp_path: Path) -> None:
    prolog(tmp_path, "9", "1")
    src = SlurmSource(SlurmSettings(job_dir=tmp_path))
    assert src.holdings(1.0, GPUS)[0].device_ids == (GPUS[1].id,)
    assert src.holdings(2.0, [GPUS[0]])[0].device_ids == (GPUS[1].id,)  # GPU 1 down this sample
    assert SlurmSource(SlurmSettings(job_dir=tmp_path)).holdings(1.0, [GPUS[0]]) == []  # never seen


def test_the_scripts_never_fail_a_job(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    prolog(blocker / "sub", "5", "0")  # cannot create the folder: still exit 0
    prolog(tmp_path, "", "0")  # no job id: nothing written
    epilog(tmp_path / "missing", "5", "0")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    # a value with a newline cannot add a key of its own
    prolog(tmp_path, "6", "0", SLURM_JOB_ACCOUNT="vision\nuser=mallory")
    assert read(tmp_path)["slurm:6"][1]["user"] == "kim"

