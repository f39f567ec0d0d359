"""Input domains: inference from rows, the spec keys, the projection every strategy's labelled
samples pass through, the priors, and selection=fidelity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import finish, make_config

from dfkd_cli.commands.records import loop_settings
from dfkd_cli.data import domains as domain
from dfkd_cli.data import priors, projection
from dfkd_cli.errors import UserError
from dfkd_cli.loop import student_loop
from dfkd_cli.loop.student_loop import StudentLoop
from dfkd_cli.nets import checkpoints, mlp
from dfkd_cli.strategies.registry import STRATEGIES, build_strategy
from dfkd_cli.teachers.loader import Teacher
from dfkd_cli.utils.rng import Streams

CPU = torch.device("cpu")
FEATURES = ["count", "code", "flag", "a", "b", "c"]
# raw units: count integer in [-3, 4]; code categorical {0, 2, 5}; flag binary {-1, 1};
# a, b, c a composition summing to 2
DOMAIN = domain.Domain(["integer", "categorical", "binary", "continuous", "continuous",
                        "continuous"], [-3.0, 0.0, -1.0, 0.0, 0.0, 0.0],
                       [4.0, 5.0, 1.0, 2.0, 2.0, 2.0], [None, [0.0, 2.0, 5.0], [-1.0, 1.0],
                                                       None, None, None],
                       simplex=[{"features": [3, 4, 5], "total": 2.0}])
MEAN = torch.tensor([0.5, 2.0, 0.0, 0.6, 0.7, 0.7])
SD = torch.tensor([2.0, 2.0, 1.0, 0.5, 0.5, 0.5])


def table(rows: int = 400, seed: int = 0) -> np.ndarray:
    """A small table with one feature of each kind: integer (a count with many values),
    categorical (3 codes), binary, continuous with bounds, a 3-part composition and a one-hot
    encoded colour (3 columns)."""
    rng = np.random.default_rng(seed)
    parts = rng.dirichlet([2, 3, 4], size=rows) * 100
    colour = np.eye(3)[rng.integers(0, 3, rows)]
    return np.column_stack([rng.poisson(20, rows), rng.choice([1, 2, 3], rows),
                            rng.integers(0, 2, rows), rng.uniform(-2, 7, rows), parts, colour])


def assert_in_domain(raw: torch.Tensor, tol: float = 1e-4) -> None:
    """raw (..., 6) lies in DOMAIN, up to float32 rounding."""
    raw = raw.reshape(-1, 6).double()
    count, code, flag, parts = raw[:, 0], raw[:, 1], raw[:, 2], raw[:, 3:]
    assert ((count - count.round()).abs() < tol).all() and count.min() >= -3 - tol
    assert count.max() <= 4 + tol
    assert torch.stack([(code - v).abs() < tol for v in (0, 2, 5)]).any(0).all()
    assert ((flag.abs() - 1).abs() < tol).all()
    assert (parts > -tol).all() and ((parts.sum(1) - 2).abs() < tol).all()


def test_inference_of_each_kind_from_a_small_table():
    x = table()
    found = domain.infer(x)
    assert found.kinds == ["integer", "categorical", "binary", "continuous", "continuous",
                           "continuous", "continuous", "binary", "binary", "binary"]
    assert found.onehot == [[7, 8, 9]]
    assert found.levels[1] == [1.0, 2.0, 3.0] and found.levels[2] == [0.0, 1.0]
    assert found.levels[0] is None and found.levels[3] is None
    assert found.low[3] == x[:, 3].min() and found.high[3] == x[:, 3].max()  # bounds
    assert [g["features"] for g in found.simplex] == [[4, 5, 6]]
    assert found.simplex[0]["total"] == pytest.approx(100)
    assert np.array(found.quantiles).shape == (10, domain.QUANTILES)
    assert np.allclose(np.diag(found.correlation), 1) and np.allclose(np.diag(found.copula), 1)
    # a sum that is not constant is no simplex; a count with many values is not categorical
    y = x.copy()
    y[0, 4] += 1.0
    assert domain.infer(y, with_statistics=False).simplex == []
    assert domain.infer(x[:, :1] * 0 + np.arange(len(x))[:, None],
                        with_statistics=False).kinds == ["integer"]


def test_a_wide_domain_logs_one_short_line_and_writes_every_feature(tmp_path):
    """520 features log as counts with a few names each; input_domain.yaml has all of them."""
    x = np.random.default_rng(0).normal(size=(200, 520))
    x[:, :300] = np.round(x[:, :300] * 40)  # integers with many values
    found = domain.infer(x, with_statistics=False)
    features = [f"wap{i:03d}" for i in range(520)]
    line = found.summary(features)
    assert line == ("520 features, 220 continuous; 300 integer (wap000, wap001, wap002, ...)")
    domain.write([tmp_path / "run"], [found], features)
    written = yaml.safe_load((tmp_path / "run" / domain.FILE).read_text())
    assert [r["name"] for r in written["features"]] == features
    assert [r["kind"] for r in written["features"]] == found.kinds
    assert written["features"][0]["low"] == found.low[0]


def test_a_simplex_written_to_nine_digits_is_found():
    """Compositions read from a CSV sum to their total only to the file's rounding (protein's
    20 fractions: 9 digits); the group is still found, and a group off by 1e-4 still is not."""
    rng = np.random.default_rng(3)
    parts = rng.dirichlet(np.ones(20), 2500).round(9)
    assert [g["features"] for g in domain.infer(parts, with_statistics=False).simplex] == [
        list(range(20))]
    off = parts.copy()
    off[::7, 0] += 1e-4
    assert domain.infer(off, with_statistics=False).simplex == []


def test_simplex_projection_is_the_nearest_point():
    v = torch.randn(200, 4) * 3
    p = projection.project_simplex(v, torch.tensor(2.0))
    assert (p >= 0).all() and torch.allclose(p.sum(1), torch.full((200,), 2.0))
    # no feasible point is closer: compare with random points of the simplex
    others = torch.distributions.Dirichlet(torch.ones(4)).sample((500,)) * 2
    nearest = (v.unsqueeze(1) - others).norm(dim=2).min(dim=1).values
    assert ((v - p).norm(dim=1) <= nearest + 1e-5).all()
    inside = others[:5]
    torch.testing.assert_close(projection.project_simplex(inside, torch.tensor(2.0)), inside)


def test_projection_maps_anything_onto_the_domain():
    proj = projection.Projection([DOMAIN, DOMAIN], torch.stack([MEAN, MEAN]),
                             torch.stack([SD, 2 * SD]))
    x = torch.randn(2, 500, 6) * 4
    z = proj(x)
    assert_in_domain(z[0] * SD + MEAN)
    assert_in_domain(z[1] * 2 * SD + MEAN)
    torch.testing.assert_close(proj(z), z)  # a projection: points of the domain stay put


def test_one_hot_groups_project_to_their_largest_coordinate():
    dom = domain.override(domain.Domain.continuous(4), {"onehot": [["r", "g", "b"]]},
                          ["r", "g", "b", "w"], "spec")
    assert dom.kinds[:3] == ["binary"] * 3 and dom.levels[0] == [0.0, 1.0]
    proj = projection.Projection([dom], torch.zeros(1, 4), torch.ones(1, 4))
    x = torch.tensor([[[0.2, 0.9, -1.0, 3.0], [2.0, 0.1, 0.5, -3.0]]])
    torch.testing.assert_close(proj(x), torch.tensor([[[0.0, 1.0, 0.0, 3.0],
                                                        [1.0, 0.0, 0.0, -3.0]]]))


def population(name: str, members: list[int], project: bool, prior: str = "gaussian",
               selection: str = "last") -> StudentLoop:
    """A StudentLoop over DOMAIN of small random teachers, member k with seed k (the strategy's
    quick settings from test_strategy_population)."""
    from test_strategy_population import QUICK
    cfg = make_config("distill", [f"strategy={name}", "epochs=3", "steps_per_epoch=2",
                                  "batch_size=8", "log_every=1", f"selection={selection}",
                                  f"prior={prior}", *QUICK.get(name, [])])
    K = len(members)
    nets = [mlp.StackedMLP(1, 6, [12], "tanh").init_(Streams([50 + k], CPU))
            for k in members]
    module = mlp.StackedMLP.from_state_dicts([n.member_state_dict(0) for n in nets], "tanh")
    means, sds = MEAN.expand(K, -1), SD.expand(K, -1)
    low = (torch.tensor(DOMAIN.low) - MEAN) / SD
    high = (torch.tensor(DOMAIN.high) - MEAN) / SD
    stats = domain.infer(table(seed=3)[:, [0, 1, 2, 4, 5, 6]] / [1, 1, 1, 50, 50, 50])
    dom = domain.Domain(**{**DOMAIN.__dict__, "quantiles": stats.quantiles,
                           "correlation": stats.correlation, "copula": stats.copula})
    teacher = Teacher(module.requires_grad_(False), 6, (low.expand(K, -1), high.expand(K, -1)),
                      ["t"] * K, domains=[dom] * K)
    rng = Streams([7 + k for k in members], CPU)
    student = mlp.StackedMLP(K, 6, [5], "tanh").init_(rng)
    projector = projection.Projection(teacher.domains, means, sds)
    # real_rows draws training rows: stand-in rows, off the domain until projected
    x = torch.randn(K, 40, 6, generator=torch.Generator().manual_seed(7))
    rows = (x, module(x).detach()) if STRATEGIES[name].Config.needs_rows else None
    strategy = build_strategy(cfg.strategy, teacher, rng, rows,
                              priors.Prior(prior, rng, 6, teacher.domains, means, sds, "t"))
    fidelity = None
    if selection in ("fidelity", "all"):
        fx = projector(Streams([900 + k for k in members], CPU).randn(40, 6))
        fidelity = (fx, module(fx))
    return StudentLoop(loop_settings(cfg), teacher, student, strategy, None, fidelity,
                       projector if project else None)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_labels_only_samples_in_the_domain(name, monkeypatch):
    """What the student is fitted on (x in student_step, labelled there by T) lies in the
    domain, for every strategy; with domain=off it does not (the test can fail)."""
    seen = []
    step = student_loop.student_step

    def recording(teacher, student, opt, x, n_g, weights):
        seen.append(x.clone())
        return step(teacher, student, opt, x, n_g, weights)

    monkeypatch.setattr(student_loop, "student_step", recording)
    population(name, [0, 1], project=True).run()
    assert len(seen) == 6
    for x in seen:
        assert_in_domain(x * SD + MEAN)
    seen.clear()
    population(name, [0, 1], project=False).run()
    with pytest.raises(AssertionError):
        for x in seen:
            assert_in_domain(x * SD + MEAN)


@pytest.mark.parametrize("prior", ["correlated", "copula"])
def test_population_with_a_prior_and_fidelity_equals_separate_runs(prior):
    """Member k of a population with prior=, domain=on and selection=fidelity ends as its own
    run: same history, same selected epoch, same weights."""
    together = population("bounded", [0, 1], True, prior, "fidelity")
    together.run()
    epochs = finish(together, "fidelity")
    for k in range(2):
        alone = population("bounded", [k], True, prior, "fidelity")
        alone.run()
        assert finish(alone, "fidelity") == [epochs[k]]
        for row, expected in zip(together.history[k], alone.history[0]):
            assert row == pytest.approx(expected, rel=1e-4, abs=1e-6)
        for p, q in zip(together.student.parameters(), alone.student.parameters()):
            torch.testing.assert_close(p[k], q[0], rtol=1e-4, atol=1e-6)


def test_priors_keep_the_stored_structure():
    x = table(rows=4000, seed=1)[:, [0, 1, 2, 3]]
    x[:, 3] = np.where(x[:, 3] > 3, 0.0, x[:, 3])  # a point mass at 0 (pole's floors)
    x[:, 0] = x[:, 0] + 0.8 * x[:, 3]  # correlated with it
    stats = domain.infer(x)
    mean = torch.tensor(x.mean(0), dtype=torch.float32)
    sd = torch.tensor(x.std(0), dtype=torch.float32)
    rng = Streams([1], CPU)
    draws = {name: priors.Prior(name, rng, 4, [stats], mean[None], sd[None], "t")(20000)[0]
             for name in priors.PRIORS}
    corr = torch.tensor(stats.correlation, dtype=torch.float32)
    torch.testing.assert_close(torch.corrcoef(draws["correlated"].T), corr, atol=0.03, rtol=0)
    assert torch.corrcoef(draws["gaussian"].T)[0, 3].abs() < 0.03
    copula = draws["copula"] * sd + mean  # raw units: its marginals are the stored ones
    # the mass is kept up to the quantile grid: a step of 1 / 63 at each of its two ends
    at_zero = (copula[:, 3].abs() < 1e-4).float().mean()
    assert at_zero == pytest.approx((x[:, 3] == 0).mean(), abs=2 / 63)
    assert (copula >= torch.tensor(x.min(0)) - 1e-3).all()  # within the rows' range
    assert (copula <= torch.tensor(x.max(0)) + 1e-3).all()
    with pytest.raises(UserError, match="prior=copula needs the teacher's input statistics"):
        priors.Prior("copula", rng, 4, [domain.Domain.continuous(4)], mean[None], sd[None],
                     "teacher t.pt")


@pytest.mark.parametrize("values,message", [
    ({"type": {"a": "ordinal"}}, "feature a has unknown type 'ordinal'; valid types are"),
    ({"type": {"a": "categorical"}, "levels": {"a": [0, 9]}}, r"levels \[9.0\] outside"),
    ({"simplex": [["a"]]}, "a simplex group needs at least 2 features"),
    ({"type": {"b": "binary"}, "levels": {"b": [0, 1, 2]}}, "needs exactly 2 levels"),
    ({"type": {"z": "integer"}}, "unknown feature 'z'"),
    ({"low": {"a": float("nan")}}, "feature a has a NaN bound"),  # issue 24, item 6
    ({"type": {"a": "categorical"}, "levels": {"a": ["x", "y"]}},  # item 7: tracebacks
     "a level of feature a is 'x', not a number"),
    ({"simplex": [{"total": 1}]}, "a simplex entry needs `features`"),
])
def test_bad_domain_specs_fail_with_one_line(values, message):
    base = domain.Domain.continuous(3, [0, 0, 0], [5, 5, 5])
    with pytest.raises(UserError, match=message) as err:
        domain.override(base, values, ["a", "b", "c"], "spec.yaml")
    assert "\n" not in str(err.value)


def test_fidelity_selection_keeps_the_best_epoch_on_the_fixed_set():
    loop = population("random", [0, 1], True, selection="fidelity")
    loop.run()
    last, fidelity = finish(loop, "last"), finish(loop, "fidelity")
    for k in range(2):
        scores = [row["synthetic_fidelity_rmse"] for row in loop.history[k]]
        assert fidelity[k] == int(np.argmin(scores)) and last[k] == 2
        with torch.no_grad():  # the weights restored are that epoch's: their score matches
            x, t = loop.sets["fidelity"]
            now = (loop.student(x) - t).pow(2).mean(dim=(1, 2)).sqrt()[k]
        assert float(now) == pytest.approx(min(scores), rel=1e-5)


def test_domain_keys_compose_and_are_checked():
    cfg = make_config("distill", ["prior=copula", "domain=on", "selection=all"])
    assert (cfg.prior, cfg.domain, cfg.selection) == ("copula", "on", "all")
    from dfkd_cli.config import validate
    for override, key in (("prior=uniform", "prior"), ("domain=maybe", "domain")):
        with pytest.raises(UserError, match=f"^{key}="):
            validate(make_config("distill", [override]))


def test_spec_csv_and_yaml_give_the_same_domain(tmp_path):
    from dfkd_cli.teachers import spec as teacher_spec
    yaml = tmp_path / "spec.yaml"
    yaml.write_text("features: [count, code, flag, a, b, c]\nlow: [-3, 0, -1, 0, 0, 0]\n"
                    "high: [4, 5, 1, 2, 2, 2]\n"
                    "type: {count: integer, code: categorical, flag: binary}\n"
                    "levels: {code: [0, 2, 5], flag: [-1, 1]}\n"
                    "simplex: [{features: [a, b, c], total: 2}]\n")
    pd.DataFrame({"feature": FEATURES, "low": DOMAIN.low, "high": DOMAIN.high,
                  "type": ["integer", "categorical", "binary", None, None, None],
                  "levels": [None, "0;2;5", "-1;1", None, None, None],
                  "simplex": [None, None, None, "parts", "parts", "parts"],
                  "simplex_total": [None, None, None, 2, 2, 2]}).to_csv(tmp_path / "spec.csv",
                                                                       index=False)
    for name in ("spec.yaml", "spec.csv"):
        cfg = make_config("distill", ["teacher=torchscript", "teacher.path=t.ts",
                                      f"teacher.spec={tmp_path / name}"])
        spec = teacher_spec.read(cfg.teacher)
        assert teacher_spec.domain(spec, 6, name) == DOMAIN, name


def friedman_spec(model_dir) -> dict:
    """A TorchScript friedman teacher in `model_dir` and its spec, with a box of [0, 1]."""
    from test_foreign_teachers import raw_friedman_model
    model, spec = raw_friedman_model(steps=30)
    torch.jit.script(model).save(str(model_dir / "teacher.ts"))
    return {**spec, "low": [0.0] * 10, "high": [1.0] * 10}


FRIEDMAN_DOMAIN = ("10 features, 7 continuous; 1 integer (x2); 1 categorical (x3); "
                   "1 binary (x1); simplex of 2 summing to 1 (x4, x5)")


@pytest.mark.parametrize("form", ["yaml", "csv"])
def test_foreign_teacher_spec_with_domains_end_to_end(tmp_path, form):
    """A TorchScript teacher whose spec declares types, levels and a simplex group distils with
    domain=on and selection=fidelity, no data anywhere; the log shows the domain it read."""
    from conftest import dfkd_here
    spec = friedman_spec(tmp_path)
    if form == "yaml":
        from test_foreign_teachers import write_spec_yaml
        write_spec_yaml(tmp_path / "spec.yaml", spec)
        with open(tmp_path / "spec.yaml", "a") as f:
            f.write("type: {x1: binary, x2: integer, x3: categorical}\n"
                    "levels: {x1: [0, 1], x3: [0, 0.5, 1]}\nsimplex: [[x4, x5]]\n")
    else:
        frame = pd.DataFrame({"feature": spec["features"], "mean": spec["mean"],
                              "sd": spec["sd"], "low": spec["low"], "high": spec["high"]})
        frame["type"] = ["binary", "integer", "categorical"] + [None] * 7
        frame["levels"] = ["0;1", None, "0;0.5;1"] + [None] * 7
        frame["simplex"] = [None] * 3 + ["g", "g"] + [None] * 5
        frame.to_csv(tmp_path / "spec.csv", index=False)
    proc = dfkd_here("distill", "dataset=none", "teacher=torchscript", "teacher.path=teacher.ts",
                     f"teacher.spec=spec.{form}", "domain=on", "prior=gaussian",
                     "selection=fidelity", "strategy=bounded", "epochs=4", "steps_per_epoch=2",
                     "log_every=2", "progress=false", "hydra.run.dir=run", cwd=tmp_path)
    assert f"input domain: {FRIEDMAN_DOMAIN}" in (tmp_path / "run" / "distill.log").read_text()
    written = yaml.safe_load((tmp_path / "run" / "input_domain.yaml").read_text())
    assert written["features"][2] == {"name": "x3", "kind": "categorical", "low": 0.0,
                                      "high": 1.0, "levels": [0.0, 0.5, 1.0]}
    assert written["simplex"] == [{"features": ["x4", "x5"], "total": 1.0}]
    row = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[0]
    assert row.status == "ok" and row.selection == "fidelity" and row.domain == "on", proc.stdout


@pytest.mark.parametrize("line,message", [
    ("type: {x1: ordinal}", "feature x1 has unknown type 'ordinal'"),
    ("type: {x3: categorical}\nlevels: {x3: [0, 2]}", r"levels \[2.0\] outside its bounds"),
    ("simplex: [[x4]]", "a simplex group needs at least 2 features"),
])
def test_bad_domain_spec_exits_2_with_one_line(tmp_path, line, message):
    from conftest import dfkd_here
    from test_foreign_teachers import write_spec_yaml
    write_spec_yaml(tmp_path / "spec.yaml", friedman_spec(tmp_path))
    with open(tmp_path / "spec.yaml", "a") as f:
        f.write(line + "\n")
    proc = dfkd_here("distill", "dataset=none", "teacher=torchscript", "teacher.path=teacher.ts",
                     "teacher.spec=spec.yaml", "domain=on", "epochs=2", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    import re
    assert re.search(message, proc.stderr) and len(proc.stderr.strip().splitlines()) == 1


def test_train_teacher_stores_the_domain_and_older_teachers_still_work(tmp_path):
    """train-teacher infers the domain (overridable with domain_spec=) into the checkpoint; a
    checkpoint without one (an older store) distils as all continuous, with domain=on."""
    from conftest import QUICK_DISTILL, QUICK_TEACHER, dfkd_here
    (tmp_path / "domain.csv").write_text("feature,type,low,high\nx3,integer,0,1\n")
    dfkd_here("train-teacher", *QUICK_TEACHER, "domain_spec=domain.csv", cwd=tmp_path)
    path = tmp_path / "outputs/teachers/friedman/mlp64-tanh/seed1/teacher.pt"
    payload = checkpoints.load_checkpoint(path)
    stored = domain.Domain.from_payload(payload["input_spec"]["domain"])
    assert stored.kinds == ["continuous"] * 2 + ["integer"] + ["continuous"] * 7
    assert np.array(stored.correlation).shape == (10, 10)  # statistics, never rows
    del payload["input_spec"]["domain"]
    torch.save(payload, tmp_path / "old.pt")
    dfkd_here("distill", *QUICK_DISTILL, "teacher.path=old.pt", "domain=on", "hydra.run.dir=run",
              cwd=tmp_path)
    assert "input domain: 10 features, 10 continuous" in (tmp_path / "run" / "distill.log").read_text()
    proc = dfkd_here("distill", *QUICK_DISTILL, "teacher.path=old.pt", "prior=copula", cwd=tmp_path,
                     check=False)
    assert proc.returncode == 2 and "prior=copula needs" in proc.stderr


def test_csv_spec_declares_one_hot_groups(tmp_path):
    from dfkd_cli.teachers import spec as teacher_spec
    pd.DataFrame({"feature": ["r", "g", "b", "w"], "onehot": ["colour"] * 3 + [None]}).to_csv(
        tmp_path / "spec.csv", index=False)
    cfg = make_config("distill", ["teacher=torchscript", "teacher.path=t.ts",
                                  f"teacher.spec={tmp_path / 'spec.csv'}"])
    found = teacher_spec.domain(teacher_spec.read(cfg.teacher), 4, "spec.csv")
    assert found.onehot == [[0, 1, 2]] and found.kinds[3] == "continuous"


def test_report_keeps_priors_and_domains_apart():
    from dfkd_cli.report.summary import summarize
    runs = pd.DataFrame([{"command": "distill", "dataset": "mv", "student_hidden": "mlp50-tanh",
                          "arm": arm, "selection": "last", "seed": seed, "status": "ok",
                          "student_rmse": 1.0 + (prior == "copula"), "teacher_rmse": 1.0,
                          "prior": prior, "domain": "on"}
                         for arm in ("random_sampling", "bounded") for seed in (1, 2)
                         for prior in ("gaussian", "copula")])
    table, notes = summarize(runs)
    assert len(table) == 4  # the priors are separate cells
    assert not [n for n in notes if "superseded" in n]
    assert sorted(table.rmse_mean) == [1.0, 1.0, 2.0, 2.0]


def test_auto_prior_is_the_copula_when_the_teacher_has_statistics():
    x = table(rows=500)
    stats = domain.infer(x)
    mean = torch.tensor(x.mean(0), dtype=torch.float32)[None]
    sd = torch.tensor(x.std(0), dtype=torch.float32)[None]
    d = x.shape[1]
    assert priors.Prior("auto", Streams([1], CPU), d, [stats], mean, sd, "t").name == "copula"
    bare = domain.Domain.continuous(d)  # an older or foreign teacher: no statistics
    assert priors.Prior("auto", Streams([1], CPU), d, [bare], mean, sd, "t").name == "gaussian"


def test_train_teacher_refuses_a_bad_domain_spec_before_training(tmp_path, monkeypatch):
    """Issue 24, item 6: a missing or bad domain_spec was found only after the teacher trained,
    and the message named teacher.spec."""
    from dfkd_cli.commands import train_teacher
    monkeypatch.setattr(train_teacher, "fit", lambda *a, **k: pytest.fail("trained first"))
    (tmp_path / "bad.yaml").write_text("type: {x1: ordinal}\n")
    for spec, message in [("nope.yaml", r"^domain_spec=.*nope.yaml not found$"),
                          ("bad.yaml", r"^domain_spec=.*bad.yaml: feature x1 has unknown type")]:
        cfg = make_config("train_teacher", [f"domain_spec={tmp_path / spec}",
                                            f"teacher_store={tmp_path / 'store'}"])
        with pytest.raises(UserError, match=message):
            train_teacher.run(cfg, tmp_path / "run")
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*.pt"))


@pytest.mark.parametrize("payload", [
    {"kinds": ["continuous"], "low": [0.0], "high": [1.0], "levels": [None], "run": "rm -rf"},
    {"kinds": ["continuous"]}, ["continuous"]])
def test_a_stored_domain_with_unknown_or_missing_keys_is_refused(payload):
    """Issue 24, item 7: a teacher checkpoint whose domain had an unknown key was a traceback."""
    with pytest.raises(UserError, match=r"^teacher t.pt has a damaged input domain \(keys"):
        domain.Domain.from_payload(payload, "teacher t.pt")


def test_a_checkpoint_keeps_the_statistics_as_tensors_and_reads_them_back_unchanged(tmp_path):
    """Domain.payload stores the statistics as float64 tensors (a 500-feature domain's 250,000
    correlation entries load in milliseconds, not seconds as lists); from_payload gives back
    the same numbers, bit for bit, and still reads an older checkpoint's plain lists."""
    x = np.random.default_rng(3).normal(size=(200, 6)).cumsum(axis=1)
    inferred = domain.infer(x)
    payload = inferred.payload()
    for key in domain.STATISTICS:
        assert torch.is_tensor(payload[key]) and payload[key].dtype == torch.float64
    torch.save({"domain": payload}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["domain"]
    back = domain.Domain.from_payload(loaded)
    older = domain.Domain.from_payload({k: getattr(inferred, k) for k in loaded})
    for key in domain.STATISTICS:
        assert getattr(back, key) == getattr(inferred, key) == getattr(older, key)
        assert isinstance(getattr(back, key), list)
