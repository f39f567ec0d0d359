"""Issue 28: every teacher gets the recipe. A teacher spec may carry the input statistics a dfkd
checkpoint stores (quantiles, correlation, copula), checked on load; `dfkd spec` writes them from
a training table; with them prior=auto is the Gaussian copula for a teacher from elsewhere."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import QUICK_TEACHER, dfkd, load_teacher, make_config
from torch import nn

from dfkd_cli.commands import spec as spec_command
from dfkd_cli.data import domains, priors
from dfkd_cli.data.datasets import load_table, split_for
from dfkd_cli.errors import UserError
from dfkd_cli.nets import checkpoints
from dfkd_cli.teachers import spec as teacher_spec
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")


def rows(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Four features with structure N(0, I) misses: a skewed one, one correlated with it, a
    point mass at 0 and an integer count; and a target."""
    rng = np.random.default_rng(seed)
    a = rng.gamma(2.0, 1.5, n)
    b = 0.7 * a + rng.normal(0, 1, n)
    c = np.where(rng.random(n) < 0.3, 0.0, rng.exponential(2.0, n))
    d = rng.poisson(20, n).astype(float)
    return pd.DataFrame({"a": a, "b": b, "c": c, "d": d, "y": a * b - c + 0.1 * d})


def foreign_teacher(tmp_path, spec_path, *extra):
    """A TorchScript teacher of 4 raw features with the spec at `spec_path`, loaded as distill
    loads it."""
    torch.manual_seed(0)
    torch.jit.script(nn.Linear(4, 1)).save(str(tmp_path / "teacher.ts"))
    cfg = make_config("distill", ["dataset=none", "teacher=torchscript",
                                  f"teacher.path={tmp_path / 'teacher.ts'}",
                                  f"teacher.spec={spec_path}", *extra])
    return load_teacher(cfg, [1], None, CPU)


def prior_of(teacher, name: str = "auto", seed: int = 1) -> priors.Prior:
    means, sds = (getattr(teacher.scalers[0], k)[None] for k in ("x_mean", "x_std"))
    return priors.Prior(name, Streams([seed], CPU), teacher.input_dim, teacher.domains, means,
                        sds, "t")


def normal_scores(x: np.ndarray) -> np.ndarray:
    return np.corrcoef(domains._normal_scores(x).T)


def test_a_spec_with_statistics_gives_the_copula(tmp_path):
    """The spec `dfkd spec` writes makes prior=auto the copula: its draws keep the rows'
    marginals (a point mass, the skew, integer steps) and their normal-score correlation."""
    frame = rows()
    frame.to_csv(tmp_path / "train.csv", index=False)
    dfkd("spec", "--data", "train.csv", "--out", "spec.yaml", cwd=tmp_path)
    teacher = foreign_teacher(tmp_path, tmp_path / "spec.yaml")
    prior = prior_of(teacher)
    assert prior.name == "copula"
    scaler = teacher.scalers[0]
    raw = (prior(20000)[0] * scaler.x_std + scaler.x_mean).double().numpy()
    x = frame[["a", "b", "c", "d"]].to_numpy()
    stored = np.array(teacher.domains[0].copula)
    np.testing.assert_allclose(stored, normal_scores(x), atol=1e-9)  # the rows' copula ...
    np.testing.assert_allclose(normal_scores(raw), stored, atol=0.03)  # ... kept by the draws
    for p in (0.1, 0.25, 0.5, 0.75, 0.9):  # the marginals: the rows' quantiles
        np.testing.assert_allclose(np.quantile(raw, p, axis=0), np.quantile(x, p, axis=0),
                                   rtol=0.05, atol=0.15)
    assert (raw[:, 2] < 1e-4).mean() == pytest.approx(0.3, abs=0.03)  # the point mass at 0
    bare = spec_command.build(tmp_path / "train.csv", statistics=False)
    (tmp_path / "bare.yaml").write_text(teacher_spec.to_yaml(bare, "no statistics"))
    assert prior_of(foreign_teacher(tmp_path, tmp_path / "bare.yaml")).name == "gaussian"


def bad(key: str, fn):
    return pytest.param(key, fn, id=f"{key}-{fn.__name__}")


def wrong_shape(m):
    return [row[:-1] for row in m]


def decreasing(m):
    m = [list(r) for r in m]
    m[1][5], m[1][6] = m[1][6] + 1.0, m[1][5]
    return m


def not_finite(m):
    m = [list(r) for r in m]
    m[0][1] = float("nan")
    return m


def asymmetric(m):
    m = [list(r) for r in m]
    m[0][1] += 0.2
    return m


def off_diagonal(m):
    m = [list(r) for r in m]
    m[2][2] = 0.8
    return m


def indefinite(m):  # symmetric, unit diagonal, entries in [-1, 1], yet no correlation matrix
    m = np.eye(len(m))
    m[0, 1] = m[1, 0] = m[1, 2] = m[2, 1] = 0.9
    m[0, 2] = m[2, 0] = -0.9
    return m.tolist()


CASES = {"wrong_shape": r"`{key}` must be a 4 x (64|4) matrix of numbers",
         "decreasing": r"`quantiles` of feature b decrease",
         "not_finite": r"`{key}` has non-finite entries",
         "asymmetric": r"`{key}` is not symmetric",
         "off_diagonal": r"`{key}` must have a unit diagonal",
         "indefinite": r"`{key}` is not positive semi-definite \(smallest eigenvalue -"}


@pytest.mark.parametrize("key,fn", [
    bad("quantiles", wrong_shape), bad("quantiles", decreasing), bad("quantiles", not_finite),
    bad("correlation", wrong_shape), bad("correlation", not_finite),
    bad("copula", asymmetric), bad("copula", off_diagonal), bad("copula", indefinite),
    bad("correlation", indefinite)])
def test_a_bad_statistic_is_refused_naming_it(tmp_path, key, fn):
    rows(200).to_csv(tmp_path / "train.csv", index=False)
    values = spec_command.build(tmp_path / "train.csv")
    values[key] = fn(values[key])
    (tmp_path / "spec.yaml").write_text(teacher_spec.to_yaml(values, "bad"))
    with pytest.raises(UserError, match=CASES[fn.__name__].format(key=key)) as err:
        foreign_teacher(tmp_path, tmp_path / "spec.yaml")
    assert "\n" not in str(err.value) and "spec.yaml" in str(err.value)


def test_a_bad_statistic_in_a_spec_exits_2_in_one_line(tmp_path):
    rows(200).to_csv(tmp_path / "train.csv", index=False)
    values = spec_command.build(tmp_path / "train.csv")
    values["copula"] = indefinite(values["copula"])
    (tmp_path / "spec.yaml").write_text(teacher_spec.to_yaml(values, "bad"))
    torch.jit.script(nn.Linear(4, 1)).save(str(tmp_path / "teacher.ts"))
    proc = dfkd("distill", "dataset=none", "teacher=torchscript", "teacher.path=teacher.ts",
                "teacher.spec=spec.yaml", "epochs=2", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"teacher spec spec.yaml: `copula` is not positive semi-definite",
                     proc.stderr) and len(proc.stderr.strip().splitlines()) == 1


def test_the_commands_spec_is_the_checkpoints_prior(workdir, tmp_path):
    """`dfkd spec` on a dfkd teacher's training rows gives what train-teacher stored in the
    checkpoint: the same scalers, domain and statistics, so the same prior draws."""
    cfg = make_config("train_teacher", QUICK_TEACHER)
    table = load_table(cfg.dataset, cfg.data_dir)
    train_rows = split_for(cfg.dataset, table, 1).rows[0]
    raw = table.x[train_rows]
    payload = checkpoints.load_checkpoint(
        workdir / "outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt")
    pd.DataFrame(raw, columns=table.features).assign(y=table.y[train_rows, 0]).to_csv(
        tmp_path / "train.csv", index=False, float_format="%.17g")
    dfkd("spec", "--data", "train.csv", "--out", "spec.yaml", cwd=tmp_path)
    stored = domains.Domain.from_payload(payload["input_spec"]["domain"])
    spec = teacher_spec.from_file(tmp_path / "spec.yaml")
    written = teacher_spec.domain(spec, spec.input_dim(), "spec.yaml")
    for key in domains.STATISTICS:
        np.testing.assert_allclose(np.array(getattr(written, key)),
                                   np.array(getattr(stored, key)), rtol=0, atol=1e-12)
    assert (written.kinds, written.low, written.high) == (stored.kinds, stored.low, stored.high)
    for ours, theirs in (("mean", "x_mean"), ("sd", "x_std"), ("target_mean", "y_mean"),
                         ("target_sd", "y_std")):
        torch.testing.assert_close(torch.tensor(getattr(spec, ours)),
                                   payload["scaler"][theirs].reshape(-1))
    dfkd_teacher = load_teacher(make_config("distill", [
        f"teacher_store={workdir / 'outputs/teachers'}", "teacher.hidden=[64]"]), [1], None, CPU)
    torch.jit.script(nn.Linear(10, 1)).save(str(tmp_path / "teacher.ts"))
    foreign = load_teacher(make_config("distill", [
        "dataset=none", "teacher=torchscript", f"teacher.path={tmp_path / 'teacher.ts'}",
        f"teacher.spec={tmp_path / 'spec.yaml'}"]), [1], None, CPU)
    ours, theirs = prior_of(foreign), prior_of(dfkd_teacher)
    assert ours.name == theirs.name == "copula"
    torch.testing.assert_close(ours(500), theirs(500))


def test_the_command_writes_to_stdout_and_names_its_options_in_errors(tmp_path, capsys):
    rows(50).assign(id=range(50)).to_csv(tmp_path / "t.csv", index=False)
    assert spec_command.main(["--data", str(tmp_path / "t.csv"), "--drop", "id"]) == 0
    values = yaml.safe_load(capsys.readouterr().out)
    assert values["features"] == ["a", "b", "c", "d"] and values["targets"] == ["y"]
    assert np.array(values["copula"]).shape == (4, 4)
    for argv, message in ((["--target", "zz"], r"--target \['zz'\] is not a column"),
                          (["--drop", "q"], r"--drop names columns not in"),
                          (["--out", "spec.csv"], r"--out spec.csv: a spec with statistics is")):
        assert spec_command.main(["--data", str(tmp_path / "t.csv"), *argv]) == 2
        err = capsys.readouterr().err
        assert re.search(message, err) and len(err.strip().splitlines()) == 1
