"""The CUDA-specific branches (docs/testing.md lists them), each run with device=cuda.

Every test here is marked `gpu`: skipped, and listed in the run's skip summary, where no CUDA GPU
is present. On a machine with one, `pytest -m gpu` runs exactly these.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import QUICK_DISTILL, dfkd, small_population
from test_strategy_population import QUICK, SEEDS, D

from dfkd_cli.commands.records import loop_settings
from dfkd_cli.errors import UserError
from dfkd_cli.loop.student_loop import StudentLoop
from dfkd_cli.nets import checkpoints, mlp
from dfkd_cli.nets.checkpoints import load_checkpoint
from dfkd_cli.strategies.registry import STRATEGIES
from dfkd_cli.utils import runtime
from dfkd_cli.utils.rng import Streams

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def test_auto_picks_the_gpu_and_a_missing_index_is_refused():
    assert runtime.resolve_device("auto").type == "cuda"
    assert runtime.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(UserError, match=r"only \d+ GPU\(s\) exist"):
        runtime.resolve_device(f"cuda:{torch.cuda.device_count()}")


@pytest.mark.parametrize("members", [1, 3])
def test_hand_written_gradients_on_cuda(members):
    """mlp.bmm / baddbmm take torch's own kernels off the CPU (no row-vector detour)."""
    net = mlp.StackedMLP(members, 4, [16], "tanh").init_(Streams(list(range(members)),
                                                                    CUDA))
    x = torch.randn(members, 9, 4, device=CUDA, requires_grad=True)
    out = net(x)
    grad_out = torch.randn_like(out)
    expected = torch.autograd.grad(out, [x, *net.parameters()], grad_out)
    with torch.no_grad():
        saved = net.trace(x)
        got = [net.input_grad(saved, grad_out), *net.param_grads(saved, grad_out)]
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def cuda_loop(name: str, members: list[int]) -> StudentLoop:
    from conftest import make_config
    cfg = make_config("distill", [f"strategy={name}", "epochs=4", "steps_per_epoch=2",
                                  "batch_size=6", "log_every=2", "selection=last",
                                  *QUICK.get(name, [])])
    teacher, rng, student = small_population(members, SEEDS, D, CUDA)
    return StudentLoop(loop_settings(cfg), teacher, student,
                       STRATEGIES[name](cfg.strategy, D, teacher.box, rng), None)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_population_and_resume_on_cuda(name, tmp_path):
    """Member streams are CUDA generators (sobol copies its CPU engines' points over with
    non_blocking): a member equals its run alone, and a resumed run the straight one."""
    population = cuda_loop(name, [0, 1])
    population.run()
    alone = cuda_loop(name, [1])
    alone.run()
    for p, q in zip(population.student.parameters(), alone.student.parameters()):
        torch.testing.assert_close(p[1], q[0], rtol=1e-4, atol=1e-6)
    first = cuda_loop(name, [0, 1])
    first.run(should_stop=lambda: True)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = cuda_loop(name, [0, 1])
    resumed.load_state_dict(checkpoints.load_weights_only(tmp_path / "state.pt"))
    resumed.run()
    assert resumed.history == population.history
    for p, q in zip(resumed.student.parameters(), population.student.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("strategy", ["bounded", "sobol", "evolution"])
def test_distill_and_probe_on_cuda(workdir, tmp_path, strategy):
    """The CLI end to end on the GPU: teacher, splits and box moved there, checkpoints written
    from it readable on a CPU; probe's timing synchronises the device."""
    dfkd("distill", "device=cuda", f"strategy={strategy}", "selection=both", "seeds=[1]",
         *QUICK_DISTILL, f"hydra.run.dir={tmp_path}/run", cwd=workdir)
    row = pd.read_csv(tmp_path / "run" / "seed1" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.device.startswith("cuda")
    student = load_checkpoint(tmp_path / "run" / "seed1" / "student.pt")
    assert all(t.device.type == "cpu" for t in student["state_dict"].values())
    dfkd("probe", "device=cuda", *QUICK_DISTILL, f"hydra.run.dir={tmp_path}/probe",
         cwd=workdir)


def test_onnx_teacher_on_cuda(tmp_path):
    """onnxruntime runs on the CPU: a GPU run sends each batch there and the outputs back."""
    from test_foreign_teachers import QUICK, onnx_teacher
    dfkd("distill", "device=cuda", *onnx_teacher(tmp_path), "strategy=evolution", *QUICK,
         "hydra.run.dir=evo", cwd=tmp_path)
    row = pd.read_csv(tmp_path / "evo" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.device.startswith("cuda") and row.teacher_r2 > 0.5
