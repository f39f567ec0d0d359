"""Sweeps through Ray (the [ray] extra), on a real Ray: a cluster started with `ray start --head`
on 127.0.0.1 with a token, and a local instance. Run by `make test-ray` (docs/testing.md), which
installs the extra (about 400 MB) and sets DFKD_TEST_RAY=1; skipped by `make test`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import QUICK_DISTILL, USER_ENV, dfkd

REASON = "run by `make test-ray` (docs/testing.md)"
pytest.importorskip("hydra_plugins.hydra_ray_launcher",
                    reason=f"the [ray] extra is not installed; {REASON}")
if os.environ.get("DFKD_TEST_RAY") != "1":
    pytest.skip(f"starts a Ray cluster: {REASON}, which sets DFKD_TEST_RAY=1",
                allow_module_level=True)

RAY = str(Path(sys.executable).with_name("ray"))
# log_every through the `mod` resolver: a Ray worker that had not registered it fails its job
SETTINGS = [o for o in QUICK_DISTILL if not o.startswith("log_every=")] + ["log_every=${mod:5,3}"]


@dataclass
class Cluster:
    address: str
    env: dict  # what the launching `dfkd` needs: the token, and a HOME of its own
    temp_dir: Path  # the cluster's session files (its workers' logs)
    start_dir: Path  # where `ray start` ran: the workers' own directory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_is_running() -> bool:
    """A Ray cluster of anyone's on this machine (`ray stop` at the end would stop it too)."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() in ("gcs_server", "raylet"):
                return True
        except OSError:
            continue
    return False


def base_env(home: Path) -> dict:
    """A HOME of its own, so that Ray neither reads nor writes the user's ~/.ray/auth_token."""
    env = {k: v for k, v in os.environ.items()
           if k not in USER_ENV and not k.startswith("RAY_")}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def short_tmp():
    """Ray's session files hold Unix sockets, whose paths must stay short: /tmp/dfkd-ray-*."""
    root = Path(tempfile.mkdtemp(prefix="dfkd-ray-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(short_tmp):
    """The README's head: `ray get-auth-token --generate`, then `ray start --head` (on 127.0.0.1,
    2 CPUs), which turns token authentication on since the token file exists; `ray stop` at the
    end. The launching `dfkd` gets the token as RAY_AUTH_TOKEN, in a HOME without the file."""
    if ray_is_running():
        pytest.fail("a Ray cluster already runs on this machine: stop it and rerun (this test "
                    "ends with `ray stop`, which would stop it too)")
    head_home, home, start_dir = short_tmp / "head", short_tmp / "home", short_tmp / "start"
    for folder in (head_home, home, start_dir):
        folder.mkdir()
    head_env = base_env(head_home)
    token = subprocess.run([RAY, "get-auth-token", "--generate"], env=head_env, check=True,
                           capture_output=True, text=True, timeout=60).stdout.strip()
    assert (head_home / ".ray" / "auth_token").read_text().strip() == token
    port = free_port()
    cmd = [RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--num-cpus=2", "--include-dashboard=false", "--object-store-memory=100000000",
           "--disable-usage-stats", f"--temp-dir={short_tmp / 'ray'}"]
    try:
        subprocess.run(cmd, env=head_env, cwd=start_dir, check=True, capture_output=True,
                       text=True, timeout=120)
        yield Cluster(f"127.0.0.1:{port}", {**base_env(home), "RAY_AUTH_TOKEN": token},
                      short_tmp / "ray", start_dir)
    finally:
        subprocess.run([RAY, "stop"], env=head_env, capture_output=True, timeout=120)


def error_line(proc) -> str:
    """The last line dfkd wrote to stderr, where a traceback would end."""
    return proc.stderr.strip().splitlines()[-1]


def one_line_error(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    return error_line(proc)


def test_sweep_on_a_local_instance(workdir, short_tmp):
    """hydra/launcher=ray: Ray started by the sweep on this machine, its workers in the launching
    directory (the relative teacher store)."""
    home = short_tmp / "home_local"
    home.mkdir()
    sweep = workdir / "outputs" / "ray_local_sweep"
    dfkd("distill", "-m", "arm=random_sampling,bounded", *SETTINGS, "hydra/launcher=ray",
         "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false",
         f"+hydra.launcher.ray.init._temp_dir={short_tmp / 'ray_local'}",
         f"hydra.sweep.dir={sweep}", cwd=workdir, env=base_env(home), timeout=300)
    assert "RayLauncher" in (sweep / "multirun.yaml").read_text()
    runs = pd.read_csv(sweep / "runs.csv")
    assert sorted(runs.arm) == ["bounded", "random_sampling"] and set(runs.status) == {"ok"}
    assert sorted(Path(d).name for d in runs.run_dir) == ["0", "1"]
    assert set(runs.teacher_path) == {"outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt"}
    assert "Failed or incomplete runs (0)" in (sweep / "report.md").read_text()
    # Ray 2.60 gives a local instance a token (README: a later `ray start --head` then wants it)
    assert (home / ".ray" / "auth_token").is_file()


def test_sweep_on_a_running_cluster(workdir, cluster):
    """hydra/launcher=ray_cluster with the address: both jobs run on the cluster, in the launching
    directory (the relative sweep directory) with its DFKD_* variables (the teacher store); the
    job without a teacher is reported as failed like any other, after the summary."""
    store = workdir / "outputs" / "teachers"
    sweep = workdir / "outputs" / "ray_cluster_sweep"
    proc = dfkd("distill", "-m", "seed=1,2", *SETTINGS, "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address={cluster.address}",
                "hydra.sweep.dir=outputs/ray_cluster_sweep", cwd=workdir, check=False,
                env={**cluster.env, "DFKD_TEACHER_STORE": str(store)}, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert error_line(proc).startswith("dfkd: error: 1 of 2 jobs failed or did not finish")
    assert "RayLauncher" in (sweep / "multirun.yaml").read_text()
    runs = pd.read_csv(sweep / "runs.csv").sort_values("seed")
    assert list(runs.seed) == [1, 2] and list(runs.status) == ["ok", "failed"], runs
    assert [Path(d).name for d in runs.run_dir] == ["0", "1"]
    assert runs.teacher_path.iloc[0] == str(store / "friedman/mlp64-tanh/seed1/teacher.pt")
    assert "no teacher checkpoint" in runs.error.iloc[1]
    assert list(pd.read_csv(sweep / "0" / "history.csv").epoch) == [1, 3, 5]
    assert (sweep / "0" / "student.pt").is_file()
    assert "Failed or incomplete runs (1)" in (sweep / "report.md").read_text()
    # the jobs ran in the cluster's workers, and wrote nothing where the cluster was started
    logs = "".join(p.read_text(errors="replace")
                   for p in cluster.temp_dir.glob("session_latest/logs/worker-*"))
    assert "seed2/teacher.pt" in logs
    assert not (cluster.start_dir / "outputs").exists()


def test_a_cluster_that_refuses_the_token(workdir, cluster):
    """The wrong token: Ray retries for about 20 s, then one line and exit 2. The address comes
    from RAY_ADDRESS this time."""
    proc = dfkd("distill", "-m", "seed=1", *SETTINGS, "hydra/launcher=ray_cluster", cwd=workdir,
                check=False, timeout=120,
                env={**cluster.env, "RAY_AUTH_TOKEN": "not-the-token",
                     "RAY_ADDRESS": cluster.address})
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert line.startswith(f"dfkd: error: cannot connect to the Ray cluster at {cluster.address}")
    assert "ray get-auth-token" in line


@pytest.mark.parametrize("address", ["free port", None])
def test_no_cluster_at_the_address(workdir, short_tmp, address):
    """Nothing listening there (Ray alone would retry for minutes), or no address at all."""
    home = short_tmp / "home_none"
    home.mkdir(exist_ok=True)
    address = f"127.0.0.1:{free_port()}" if address else None
    given = [f"hydra.launcher.ray.init.address={address}"] if address else []
    proc = dfkd("distill", "-m", "seed=1", *SETTINGS, "hydra/launcher=ray_cluster", *given,
                cwd=workdir, check=False, env=base_env(home), timeout=60)
    assert proc.returncode == 2
    expected = (f"cannot reach the Ray cluster at {address}: Connection refused" if address else
                "hydra/launcher=ray_cluster needs the cluster's address")
    assert one_line_error(proc).startswith(f"dfkd: error: {expected}")
