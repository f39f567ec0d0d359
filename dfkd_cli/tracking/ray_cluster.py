"""hydra/launcher=ray_cluster: a sweep on a running Ray cluster, by its address (the [ray] extra;
docs/howto/sweeps.md, "Sweeps on a running Ray cluster").

hydra-ray-launcher's `ray` launcher (1.2.2) cannot reach a running cluster with today's Ray (2.60):
it always passes `object_store_memory` to ray.init, which Ray refuses when it connects to a
cluster, and Ray never turns token authentication on for a ray.init given an address, so the
launching process knocks without the cluster's token until Ray gives up. Its jobs would also run
in the directory the cluster was started from, with the cluster's environment, so the relative
paths dfkd reads from the launching directory (the sweep directory, `teacher_store`, `data_dir`)
and `DFKD_DATA_DIR` / `DFKD_TEACHER_STORE` would point elsewhere.

configs/hydra/launcher/ray_cluster.yaml keeps the plugin's launcher and adds the callback below,
which connects before the launcher does (the launcher then finds Ray connected and submits the
jobs): ray.init with the config's arguments only, the token sent when this machine has one, one
line and exit 2 when the cluster cannot be reached or refuses the connection, and every worker of
the sweep starting in the launching directory (where the node has it: the same machine, or
storage every node mounts at the same path) with the launching process's DFKD_* variables. Ray is
imported only when a multirun starts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from dfkd_cli.errors import UserError, reason

log = logging.getLogger("dfkd")

LAUNCH_DIR_ENV = "DFKD_LAUNCH_DIR"
REACH_TIMEOUT_S = 5.0
TOKEN_HINT = ("the cluster's token (`ray get-auth-token` on the head) belongs in RAY_AUTH_TOKEN "
              "or the file ~/.ray/auth_token (RAY_AUTH_TOKEN_PATH) of the launching machine")


def _token_available() -> bool:
    """A Ray authentication token this process could send: where Ray looks for one."""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or (
        Path(path).is_file() if path else (Path.home() / ".ray" / "auth_token").is_file())


def _use_token_if_available() -> bool:
    """Token authentication on when the user left RAY_AUTH_MODE unset and has a token (Ray does
    the same for a cluster it finds by itself, never for one given by address). True when on."""
    if "RAY_AUTH_MODE" not in os.environ and _token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
    return os.environ.get("RAY_AUTH_MODE", "").lower() == "token"


def _check_reachable(address: str) -> None:
    """A TCP connection to host:port, so that a wrong address fails in seconds (Ray retries a
    missing cluster for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"hydra.launcher.ray.init.address={address} is not valid: expected "
                        "<head host>:<port>, e.g. 127.0.0.1:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: "
                        f"{exc.strerror or type(exc).__name__}; start it with `ray start --head "
                        f"--port={port}` or fix hydra.launcher.ray.init.address") from None


def connect(init: dict[str, Any]) -> None:
    """ray.init on the running cluster `init['address']` names; a UserError when there is none,
    it cannot be reached or it refuses the connection."""
    kwargs = {k: v for k, v in init.items() if v is not None}
    address = kwargs.get("address")
    if not address:
        raise UserError("hydra/launcher=ray_cluster needs the cluster's address: "
                        "hydra.launcher.ray.init.address=<head host>:<port> (or RAY_ADDRESS); "
                        "hydra/launcher=ray starts a Ray instance on this machine instead")
    if address != "auto":
        _check_reachable(address)
    token = _use_token_if_available()  # before Ray is imported: it reads RAY_AUTH_MODE then
    import ray

    try:
        ray.init(**kwargs)
    except (ValueError, TypeError) as exc:  # an argument Ray refuses (num_cpus on a cluster, ...)
        raise UserError(f"hydra.launcher.ray.init: {reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - ConnectionError, AuthenticationError, ...
        hint = ("it refused this machine's token or the connection: check " if token else
                "if it was started with a token (Ray 2.60 does so once ~/.ray/auth_token "
                "exists), ") + TOKEN_HINT
        raise UserError(f"cannot connect to the Ray cluster at {address}: "
                        f"{reason(exc).split('. ')[0]}; {hint}") from None


def enter_launch_dir() -> None:
    """Ray's worker_process_setup_hook: each worker of the sweep starts where dfkd was launched,
    so relative paths mean what they mean there."""
    launch_dir = os.environ.get(LAUNCH_DIR_ENV, "")
    if os.path.isdir(launch_dir):
        os.chdir(launch_dir)
    else:
        log.warning("the launching directory %s is not on this node (%s): its relative paths "
                    "are read from %s", launch_dir, socket.gethostname(), os.getcwd())


def job_environment(init: dict[str, Any]) -> dict[str, Any]:
    """The sweep's runtime_env: the launching directory and DFKD_* variables, and the hook that
    enters the directory, beside whatever runtime_env the config gives."""
    runtime_env = dict(init.get("runtime_env") or {})
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("DFKD_")}
    env_vars[LAUNCH_DIR_ENV] = os.getcwd()
    runtime_env["env_vars"] = {**env_vars, **(runtime_env.get("env_vars") or {})}
    runtime_env.setdefault("worker_process_setup_hook", f"{__name__}.enter_launch_dir")
    return runtime_env


class RayCluster(Callback):
    """Connect to the cluster hydra.launcher.ray.init names when a multirun starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        init = OmegaConf.to_container(config.hydra.launcher.ray.init, resolve=True)
        try:
            connect({**init, "runtime_env": job_environment(init)})
        except ImportError:
            message = "hydra/launcher=ray_cluster needs the [ray] extra: pip install -e '.[ray]'"
        except UserError as exc:
            message = str(exc)
        else:
            return
        print(f"dfkd: error: {message}", file=sys.stderr)
        sys.exit(2)
