"""hydra/launcher=ray_cluster's connection, in-process and without Ray (so in `make test`): the
checks before Ray is asked, the token, the jobs' directory and variables. tests/test_ray.py
(`make test-ray`) runs the same through a real cluster."""

from __future__ import annotations

import logging
import os
import socket
import sys

import pytest
from omegaconf import OmegaConf

from dfkd_cli.errors import UserError
from dfkd_cli.tracking import ray_cluster
from dfkd_cli.tracking.ray_cluster import RayCluster, connect, enter_launch_dir, job_environment


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address, message", [
    (None, "hydra/launcher=ray_cluster needs the cluster's address"),
    ("head-without-port", "hydra.launcher.ray.init.address=head-without-port is not valid"),
    ("closed", "cannot reach the Ray cluster at 127.0.0.1:{port}: Connection refused"),
])
def test_no_cluster_there_is_a_user_error_before_ray_is_asked(monkeypatch, address, message):
    monkeypatch.setitem(sys.modules, "ray", None)  # importing Ray would fail the test
    port = closed_port()
    address = f"127.0.0.1:{port}" if address == "closed" else address
    with pytest.raises(UserError) as caught:
        connect({"address": address, "object_store_memory": None})
    assert str(caught.value).startswith(message.format(port=port))


def test_without_the_extra_the_sweep_stops_with_one_line(monkeypatch, capsys):
    """Reachable address, no Ray: one line naming the extra and exit 2, not an ImportError."""
    monkeypatch.setitem(sys.modules, "ray", None)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        config = OmegaConf.create({"hydra": {"launcher": {"ray": {"init": {
            "address": "127.0.0.1:%d" % server.getsockname()[1]}}}}})
        with pytest.raises(SystemExit) as stop:
            RayCluster().on_multirun_start(config)
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        "dfkd: error: hydra/launcher=ray_cluster needs the [ray] extra: pip install -e '.[ray]'\n")


@pytest.mark.parametrize("mode, token, expected", [
    (None, "env", "token"),       # RAY_AUTH_TOKEN given: sent
    (None, "file", "token"),      # ~/.ray/auth_token (what `ray start --head` used): sent
    (None, None, None),           # no token: Ray's default, no authentication
    ("disabled", "env", "disabled"),  # the user's RAY_AUTH_MODE is kept
])
def test_token_is_sent_when_this_machine_has_one(monkeypatch, tmp_path, mode, token, expected):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    if mode:
        monkeypatch.setenv("RAY_AUTH_MODE", mode)
    if token == "env":
        monkeypatch.setenv("RAY_AUTH_TOKEN", "abc")
    elif token == "file":
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text("abc")
    assert ray_cluster._use_token_if_available() is (expected == "token")
    assert os.environ.get("RAY_AUTH_MODE") == expected


def test_jobs_get_the_launching_directory_and_dfkd_variables(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DFKD_TEACHER_STORE", "/shared/teachers")
    monkeypatch.setenv("NOT_DFKD", "x")
    env = job_environment({"runtime_env": {"env_vars": {"DFKD_TEACHER_STORE": "/mine"},
                                           "pip": ["x"]}})
    assert env["env_vars"]["DFKD_LAUNCH_DIR"] == str(tmp_path)
    assert env["env_vars"]["DFKD_TEACHER_STORE"] == "/mine"  # the config's own runtime_env wins
    assert "NOT_DFKD" not in env["env_vars"] and env["pip"] == ["x"]
    module, _, name = env["worker_process_setup_hook"].rpartition(".")
    assert getattr(sys.modules[module], name) is enter_launch_dir


def test_a_worker_enters_the_launching_directory_where_it_exists(monkeypatch, tmp_path, caplog):
    start = tmp_path / "start"
    start.mkdir()
    monkeypatch.chdir(start)
    monkeypatch.setenv("DFKD_LAUNCH_DIR", str(tmp_path))
    enter_launch_dir()
    assert os.getcwd() == str(tmp_path)
    monkeypatch.setenv("DFKD_LAUNCH_DIR", str(tmp_path / "not-on-this-node"))
    with caplog.at_level(logging.WARNING, logger="dfkd"):
        enter_launch_dir()
    assert os.getcwd() == str(tmp_path) and "is not on this node" in caplog.text
