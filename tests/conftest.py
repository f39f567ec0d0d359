"""Shared fixtures: the config composer, a tiny teacher store made once, the dfkd command, and
a loud list of what was skipped (under CI=true a skip other than a GPU test fails the run)."""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig

from dfkd_cli import cli
from dfkd_cli.commands import distill, probe, records, train_teacher
from dfkd_cli.config import register_configs, validate
from dfkd_cli.data.datasets import Split, load_table, split_for
from dfkd_cli.teachers import loader

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "datasets"
# the `dfkd` installed beside the interpreter running the tests (this checkout's .venv), not
# whichever one comes first on PATH
_BESIDE = Path(sys.executable).with_name("dfkd")
DFKD = str(_BESIDE) if _BESIDE.is_file() else shutil.which("dfkd") or str(_BESIDE)
# a user's settings that would point tests at their own data or teachers
USER_ENV = ("DFKD_DATA_DIR", "DFKD_TEACHER_STORE", "HYDRA_FULL_ERROR")

# A short run: the protocol's shape at a fraction of its length.
QUICK_TEACHER = ["epochs=3", "batch_size=64", "teacher.hidden=[64]"]
QUICK_DISTILL = ["epochs=6", "steps_per_epoch=3", "log_every=2", "teacher.hidden=[64]"]
# The run directory of the workdir fixture's train-teacher run (under the working directory).
TEACHER_RUN = "teacher-run"


def make_config(name: str, overrides: list[str] = ()):
    """Compose a command's config exactly as the CLI does, without running it."""
    register_configs()
    with initialize_config_module(config_module="dfkd_cli.configs", version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def run_here(command: str, overrides: list[str], run_dir: Path, root: Path | None = None):
    """Run `dfkd <command>` (train-teacher, distill, probe) in this process, as the CLI's job
    does once Hydra has composed its config: validated, then run in `run_dir`. `root` stands for
    the working directory: its outputs/teachers is the teacher store. Returns what the command
    returns (its metrics frame). Nothing here is a subprocess: no start-up to pay."""
    name = command.replace("-", "_")
    store = [f"teacher_store={root / 'outputs/teachers'}"] if root is not None else []
    cfg = make_config(name, ["progress=false", *store, *overrides])
    validate(cfg)
    run = {"train_teacher": train_teacher.run, "distill": distill.run, "probe": probe.run}[name]
    return run(cfg, Path(run_dir))


def load_teacher(cfg, seeds: list[int], table, device):
    """The teacher a run config names, as `dfkd distill` loads it (records.teacher_source)."""
    return loader.load(records.teacher_source(cfg), seeds, table, device)


def member_splits(cfg, teacher, table, seeds: list[int], device):
    """Each member's split, as `dfkd distill` makes them."""
    return loader.member_splits(records.teacher_source(cfg), teacher, table, seeds, device)


def finish(loop, selection: str) -> list[int]:
    """Put `selection`'s weights in the loop's student; returns its epochs per member."""
    loop.use(selection)
    return loop.selected_epochs(selection)


def small_population(members: list[int], seeds: list[int], d: int,
                     device: torch.device = torch.device("cpu")):
    """(teacher, rng, student) of a small hand-made population on `device`: member k of
    `members` has the random 12-unit teacher and feature box of seeds[k] (members differ in
    both), a 5-unit student and the random stream of its seed."""
    from dfkd_cli.nets import mlp
    from dfkd_cli.utils.rng import Streams

    cpu = torch.device("cpu")
    states, boxes = [], []
    for seed in seeds:
        net = mlp.StackedMLP(1, d, [12], "tanh").init_(Streams([100 + seed], cpu))
        states.append(net.member_state_dict(0))
        low = -1.5 - torch.rand(d, generator=torch.Generator().manual_seed(seed))
        boxes.append((low, low + 3.0))
    module = mlp.StackedMLP.from_state_dicts([states[k] for k in members], "tanh").to(device)
    box = tuple(torch.stack([boxes[k][i] for k in members]).to(device) for i in (0, 1))
    teacher = loader.Teacher(module.requires_grad_(False), d, box, ["t"] * len(members))
    rng = Streams([seeds[k] for k in members], device)
    student = mlp.StackedMLP(len(members), d, [5], "tanh").to(device).init_(rng)
    return teacher, rng, student


def load_split(cfg) -> Split:
    """The split a run config describes (dataset, data_dir, seed)."""
    return split_for(cfg.dataset, load_table(cfg.dataset, cfg.data_dir), cfg.seed)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (MNIST's format), gzip-compressed when the name ends .gz."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def fake_mnist(folder: Path, rows: int = 300) -> Path:
    """<folder>/mnist/ holding t10k IDX files of `rows` blurry 28 x 28 'digits' whose brightness
    pattern depends on the label, so a network can learn something in a few steps."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, rows)
    grid = np.linspace(0, 1, 28)
    images = 255 * np.clip(np.sin(np.outer(grid, grid)[None] * (1 + labels[:, None, None]))
                           + 0.2 * rng.standard_normal((rows, 28, 28)), 0, 1)
    (folder / "mnist").mkdir(parents=True, exist_ok=True)
    write_idx(folder / "mnist" / "t10k-images-idx3-ubyte.gz", images)
    write_idx(folder / "mnist" / "t10k-labels-idx1-ubyte.gz", labels)
    return folder


def dfkd(*args: str, cwd: Path, env: dict | None = None, check: bool = True,
         timeout: float = 600):
    """Run the installed `dfkd` command in a subprocess; returns the CompletedProcess."""
    full_env = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    full_env.update(env or {})
    proc = subprocess.run([DFKD, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dfkd {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def one_line_error(proc, *needles: str) -> str:
    """Exit 2 and a single `error:` line on stderr holding every needle, no traceback; the
    line."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def dfkd_here(*args: str, cwd: Path, env: dict | None = None, check: bool = True):
    """`dfkd` run in this process through its entry point (cli.main), in the working directory
    `cwd`, with `env` added to the environment: the same exit code, stdout and stderr as the
    subprocess of `dfkd()` for what does not need a process of its own (an error and its exit
    code, a run's files), without the seconds of start-up. The exit code is SystemExit's, 0 when
    main returns, and 1 with the traceback on stderr for an uncaught exception, as Python's.
    Hydra's logging and job config, torch's thread count and the environment are put back
    afterwards (a later test that runs a command's function directly must not read this job's
    Hydra config)."""
    saved_env, saved_argv, threads = dict(os.environ), list(sys.argv), torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        for name in USER_ENV:
            os.environ.pop(name, None)
        os.environ.update(env or {})
        with _working_directory(cwd), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            try:
                cli.main(list(args))
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (stop.code is not None)
            except Exception:  # noqa: BLE001 - as the interpreter would: exit 1, a traceback
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        torch.set_num_threads(threads)
        HydraConfig.instance().cfg = None
        _forget_hydra_logging()
    proc = subprocess.CompletedProcess(["dfkd", *args], code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"dfkd {' '.join(args)} exited {code} (in process)\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def _working_directory(path: Path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _forget_hydra_logging() -> None:
    """Drop the handlers a Hydra job attached to the loggers (its console stream, now a closed
    capture, and its log file), so that later runs and pytest's capture start clean."""
    for logger in [logging.getLogger(), *[logging.getLogger(n) for n in
                                          list(logging.root.manager.loggerDict)]]:
        for handler in list(getattr(logger, "handlers", [])):
            if isinstance(handler, (logging.StreamHandler, logging.FileHandler)) and \
                    type(handler).__module__ == "logging":
                logger.removeHandler(handler)
                handler.close()


@pytest.fixture(autouse=True)
def no_user_env(monkeypatch):
    """In-process configs (make_config) must not read the user's store or data folder either."""
    for name in USER_ENV:
        monkeypatch.delenv(name, raising=False)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: runs only where a CUDA GPU is present "
                                       "(device=cuda branches; docs/testing.md)")


def pytest_collection_modifyitems(config, items):
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu: needs a CUDA GPU (docs/testing.md lists these tests)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _skipped(config) -> list:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return reporter.stats.get("skipped", []) if reporter else []


def _ci_must_run(config) -> list:
    """The skips CI does not accept: with CI=true, every test but a GPU one must run (and
    tests/test_ray.py, which `make test-ray` runs with its own 400 MB extra)."""
    if os.environ.get("CI") != "true":
        return []
    # a module skipped whole (test_ray.py) reports at collection, with no keywords
    return [r for r in _skipped(config) if "gpu" not in getattr(r, "keywords", {})
            and "GPU" not in str(r.longrepr) and "make test-ray" not in str(r.longrepr)]


def pytest_sessionfinish(session, exitstatus):
    if _ci_must_run(session.config) and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Every skipped test by name and reason, in a section of its own: a skip is a promise this
    run did not check. With CI=true any skip but a GPU test also fails the run."""
    skipped = _skipped(config)
    if not skipped:
        return
    terminalreporter.section(f"{len(skipped)} TESTS SKIPPED: NOT CHECKED BY THIS RUN", sep="!",
                             red=True, bold=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        reason = str(reason).removeprefix("Skipped: ")
        terminalreporter.write_line(f"SKIPPED {report.nodeid}: {reason}", yellow=True)
    if _ci_must_run(config):
        terminalreporter.write_line("CI=true: only GPU tests (and `make test-ray`'s) may skip; "
                                    "`make install` installs every extra the tests use and CI "
                                    "has ../shared", red=True)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    """A working directory whose teacher store holds a quick friedman teacher for seed 1,
    trained in this process (its run directory is <root>/TEACHER_RUN)."""
    root = tmp_path_factory.mktemp("dfkd")
    run_here("train-teacher", QUICK_TEACHER, root / TEACHER_RUN, root)
    return root
