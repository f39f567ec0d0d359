"""Bring your own architecture: a module defined here, named by `_target_`, trains as a teacher,
distils as a student through the installed `dfkd`, resumes bit for bit after SIGTERM and exports;
its checkpoint is never rebuilt unless its class is named."""

from __future__ import annotations

import os
import signal
import subprocess

import pandas as pd
import pytest
import torch
from conftest import DFKD, dfkd
from torch import nn

from dfkd_cli.commands import evaluate
from dfkd_cli.errors import UserError
from dfkd_cli.nets.checkpoints import load_checkpoint

TARGET = "test_custom_network.Wide"


class Wide(nn.Module):
    """A user's network: one wide softplus layer with a skip connection from the inputs."""

    def __init__(self, input_dim: int, output_dim: int, width: int = 32):
        super().__init__()
        self.hidden = nn.Linear(input_dim, width)
        self.out = nn.Linear(width, output_dim)
        self.skip = nn.Linear(input_dim, output_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.softplus(self.hidden(x))) + self.skip(x)


# the store keeps the class's module in its key: two classes named Wide never share a folder
STORED = f"outputs/teachers/friedman/{TARGET}-width16/seed1/teacher.pt"
TEACHER = ["teacher=custom", f"teacher.net._target_={TARGET}", "+teacher.net.width=16"]
STUDENT = ["student=custom", f"student.net._target_={TARGET}", "+student.net.width=8"]
DISTILL = [*TEACHER, *STUDENT, "strategy=bounded", "epochs=150", "steps_per_epoch=2",
           "log_every=5", "checkpoint_every=5", "progress=false"]


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """The subprocess finds this file's module on PYTHONPATH, as a user's package would be."""
    here = os.path.dirname(__file__)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def store(tmp_path_factory, env):
    root = tmp_path_factory.mktemp("custom")
    dfkd("train-teacher", *TEACHER, "epochs=3", "batch_size=64", "progress=false", cwd=root,
         env=env)
    return root


def test_a_custom_teacher_is_stored_under_its_name(store):
    payload = load_checkpoint(store / STORED)
    assert payload["arch"]["target"] == TARGET and payload["arch"]["kwargs"] == {"width": 16}
    assert set(payload["state_dict"]) == {"hidden.weight", "hidden.bias", "out.weight",
                                          "out.bias", "skip.weight"}


def test_custom_student_resumes_bit_for_bit_after_sigterm_and_exports(store, env, tmp_path):
    dfkd("distill", *DISTILL, f"hydra.run.dir={tmp_path}/full", cwd=store, env=env)
    cut = tmp_path / "cut"
    proc = subprocess.Popen([DFKD, "distill", *DISTILL, f"hydra.run.dir={cut}"], cwd=store,
                            env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline_checks = 0
    while not (cut / "checkpoint.pt").exists():
        assert proc.poll() is None and deadline_checks < 6000, proc.communicate()
        deadline_checks += 1
        subprocess.run(["sleep", "0.02"])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert 0 < pd.read_csv(cut / "metrics.csv").epochs_run.iloc[0] < 150
    dfkd("distill", *DISTILL, f"hydra.run.dir={cut}", "resume=true", cwd=store, env=env)
    full, resumed = (load_checkpoint(d / "student.pt") for d in (tmp_path / "full", cut))
    assert full["arch"]["target"] == TARGET and full["metrics"]["student_hidden"] == "Wide-width8"
    for name, tensor in full["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
    pd.testing.assert_frame_equal(pd.read_csv(cut / "history.csv"),
                                  pd.read_csv(tmp_path / "full" / "history.csv"))

    out = dfkd("export", str(cut / "student.pt"), "--net-target", TARGET, "--out",
               str(tmp_path / "export"), cwd=store, env=env)
    assert "torchscript" in out.stdout and "onnx" in out.stdout  # each within --tolerance
    # evaluate rebuilds the same raw-unit network (in this process: the class is importable)
    x = torch.randn(64, full["arch"]["input_dim"], generator=torch.Generator().manual_seed(0))
    scripted = torch.jit.load(str(tmp_path / "export" / "student.torchscript.pt"))
    with torch.no_grad():
        torch.testing.assert_close(evaluate.load_model(cut / "student.pt", TARGET).module(x),
                                   scripted(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(UserError, match=f"pass --net-target={TARGET}$"):
        evaluate.load_model(cut / "student.pt")
    refused = dfkd("export", str(cut / "student.pt"), cwd=store, env=env, check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"dfkd export: error: checkpoint {cut / 'student.pt'} holds the custom network {TARGET}; "
        f"dfkd imports a checkpoint's code only when you name it: pass --net-target={TARGET}"]


def test_a_custom_teacher_without_its_target_named_fails_in_one_line(store, env):
    teacher = store / STORED
    proc = dfkd("distill", f"teacher.path={teacher}", "epochs=2", "progress=false", cwd=store,
                env=env, check=False)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"dfkd: error: teacher checkpoint {teacher} holds the custom "
                      f"network {TARGET}; dfkd imports a checkpoint's code only when you name "
                      f"it: pass teacher=custom teacher.net._target_={TARGET}"]


class ThreeOutputs(Wide):
    """A user's network that ignores output_dim."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__(input_dim, 3)


class NoParameters(nn.Module):
    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 2


@pytest.mark.parametrize("target,message", [
    ("test_custom_network.ThreeOutputs", r"maps \(2, 4\) inputs to \(2, 3\); expected \(2, 1\)"),
    ("test_custom_network.NoParameters", "has no parameters to train"),
])
def test_a_custom_network_that_cannot_be_fitted_is_refused_in_one_line(target, message):
    """Issue 24, item 7: both were tracebacks (a shape error mid-step; an empty optimiser)."""
    from dfkd_cli.nets import factory
    from dfkd_cli.utils.rng import Streams
    arch = {"name": "custom", "target": target, "input_dim": 4, "output_dim": 1, "kwargs": {}}
    with pytest.raises(UserError, match=message):
        factory.build(arch, Streams([1], torch.device("cpu")))


def test_a_damaged_rbf_checkpoint_is_refused_in_one_line():
    """Issue 24, item 7: weights of the wrong shape for the architecture were a traceback."""
    from dfkd_cli.nets import factory
    arch = {"name": "rbf", "input_dim": 4, "output_dim": 1, "kwargs": {"units": 5}}
    state = factory.make_module(arch).state_dict()
    state["centres"] = state["centres"][:3]
    with pytest.raises(UserError, match=r"the weights do not fit network rbf-units5 .*centres"):
        factory.from_states(arch, [state])
