"""What a user types before any work: `dfkd <command> --help` (without torch, every key with its
line from the schemas' comments), shell completion, and the command-line mistakes that Hydra
would answer with a usage dump or a traceback (-m after the overrides, a missing extra, the Ray
plugin's own address path)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DFKD, REPO, dfkd_here
from dfkd_cli import usage

COMMANDS = ("train-teacher", "distill", "probe")


def test_help_imports_neither_torch_nor_hydra():
    """What makes --help take a fraction of a second: it reads the configs and the schemas'
    source, and imports nothing heavy (docs/performance.md has the times)."""
    code = ("import sys\nfrom dfkd_cli.cli import main\nmain(['distill', '--help'])\n"
            "print(sorted(m for m in ('torch', 'hydra', 'omegaconf', 'pandas', 'numpy') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert "keys (key=value" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_groups_and_one_line_per_key(tmp_path, command):
    text = dfkd_here(command, "--help", cwd=tmp_path).stdout
    assert "schema" not in text  # the schemas' internal groups are not options
    assert "  dataset=         friedman, " in text  # the default first
    for key in usage.keys(command):
        if key.name == "command":
            continue
        lines = [line for line in text.splitlines() if line.split()[:1] == [key.name]]
        assert len(lines) == 1 and key.text and lines[0].endswith(key.text), key


def test_every_key_of_every_strategy_says_what_it_does():
    _, strategies = usage._schemas()
    assert set(strategies) >= {"bounded", "generator", "evolution", "random", "real_rows"}
    for name in strategies:
        for key in usage.keys("distill", name):
            assert key.text or key.name == "command", (name, key)


def test_help_shows_the_strategy_named(tmp_path):
    text = dfkd_here("distill", "strategy=evolution", "--help", cwd=tmp_path).stdout
    assert "strategy.generations" in text and "strategy.tv" not in text
    bad = dfkd_here("distill", "strategy=nope", "--help", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "strategy=nope is not a strategy" in bad.stderr


def test_the_comments_are_the_schemas():
    """A field's line comment, else the comment block right above it; a subclass that redefines
    a field without a comment keeps its base's."""
    keys = {k.name: k for k in usage.keys("distill")}
    assert keys["seed"].text == "the split, the teacher and the run's random numbers"
    assert keys["epochs"].default == "8000" and keys["epochs"].text.startswith("E: four times")
    assert keys["stop"].text.startswith("plateau: each member stops alone")
    assert keys["strategy.steps"].text == "RMSprop steps on each batch"
    assert keys["dataset.parts"].default == '["t10k"]'
    assert keys["strategy.name"].text == "the strategy, set by strategy=<name>"
    teacher = {k.name: k for k in usage.keys("train-teacher")}
    assert teacher["epochs"].default == "500"


def test_the_reference_tables_are_the_schemas():
    """docs/reference.md's key tables are made from the same text (python -m dfkd_cli.usage
    docs/reference.md rewrites them)."""
    path = REPO / "docs" / "reference.md"
    text = path.read_text()
    for command in COMMANDS:
        assert f"<!-- keys:{command} -->" in text
    assert usage.rewrite_reference(path) == text


def _bash_complete(line: str) -> list[str]:
    script = ('eval "$(dfkd completion bash)"; COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; '
              '_dfkd; printf "%s\\n" "${COMPREPLY[@]}"')
    env = {**os.environ, "PATH": f"{Path(DFKD).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script, "bash", line], capture_output=True, text=True,
                          env=env, check=True, timeout=60)
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completion_of_commands_keys_and_options():
    """The script `dfkd completion bash` prints, run by bash as a TAB would run it."""
    assert _bash_complete("dfkd di") == ["distill "]
    assert "dataset=" in _bash_complete("dfkd distill datas")
    assert "dataset.n_train=" in _bash_complete("dfkd distill dataset.n")
    assert _bash_complete("dfkd distill seed=1 dataset=cp") == ["cpusmall "]
    assert _bash_complete("dfkd train-teacher hydra/launcher=jo") == ["joblib "]
    assert _bash_complete("dfkd report ") == []


def test_a_flags_value_before_m_is_no_override(tmp_path):
    proc = dfkd_here("distill", "--cfg", "job", "-m", "seed=1,2", cwd=tmp_path, check=False)
    assert "must come first" not in proc.stderr


@pytest.mark.parametrize("args, expected", [
    (["distill", "seed=1,2", "-m", "epochs=5"],
     "-m must come first, right after the command: dfkd distill -m seed=1,2 epochs=5"),
    (["distill", "-sc", "install=bash"], 'eval "$(dfkd completion bash)"'),
    (["completion", "fish"], "dfkd completion supports bash"),
])
def test_command_line_mistakes_are_one_line(tmp_path, args, expected):
    proc = dfkd_here(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2 and expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override, extra", [
    ("hydra/launcher=joblib", "joblib"), ("hydra/launcher=submitit_slurm", "slurm"),
    ("hydra/sweeper=optuna", "optuna"), ("hparams_search=bounded_optuna", "optuna")])
def test_a_missing_extra_names_its_install_command(tmp_path, monkeypatch, override, extra):
    """As without the extra installed: its plugin module cannot be found."""
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("hydra_plugins.")
                        else found(name, *a))
    proc = dfkd_here("distill", "-m", override, "seed=1,2", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f'dfkd: error: {override} needs the [{extra}] extra: pip install "dfkd-cli[{extra}]" '
        f'(in a clone: make install, or pip install -e ".[{extra}]")')


@pytest.mark.parametrize("how", ["override", "environment"])
def test_the_ray_plugins_address_path_points_to_ray_cluster(tmp_path, monkeypatch, how):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    args = ["distill", "-m", "seed=1,2", "hydra/launcher=ray"]
    env = {}
    if how == "override":
        args.append("+hydra.launcher.ray.init.address=10.0.0.5:6379")
    else:
        env["RAY_ADDRESS"] = "10.0.0.5:6379"
    proc = dfkd_here(*args, cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(
        "dfkd: error: hydra/launcher=ray starts a Ray instance of its own; for the running "
        "cluster at 10.0.0.5:6379 use hydra/launcher=ray_cluster")


def test_the_spec_commands_closing_hint_runs_as_printed(tmp_path):
    """`dfkd spec` ends with the distill command that uses the spec: it runs once <model> is a
    model (it had no dataset=none, and a distill without data needs it)."""
    import numpy as np
    import torch

    x = np.random.default_rng(0).normal(size=(300, 3))
    rows = "a,b,c,y\n" + "\n".join(",".join(map(str, [*r, r.sum()])) for r in x)
    (tmp_path / "train.csv").write_text(rows + "\n")
    torch.jit.script(torch.nn.Linear(3, 1)).save(str(tmp_path / "model.pt"))
    proc = dfkd_here("spec", "--data", "train.csv", "--out", "spec.yaml", cwd=tmp_path)
    hint = proc.stderr.split("distil with: ")[1].strip()
    args = hint.replace("<model>", "model.pt").split()[1:]
    dfkd_here(*args, "epochs=2", "steps_per_epoch=1", cwd=tmp_path)
