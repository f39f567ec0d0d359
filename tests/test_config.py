"""Composing configs: every option of every group composes; typos and wrong types fail early."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import REPO, make_config
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from dfkd_cli.config import register_configs, validate
from dfkd_cli.errors import UserError

GROUPS = {"distill": ["dataset", "teacher", "student", "strategy", "optimizer", "alpha", "arm"],
          "train_teacher": ["dataset", "teacher", "optimizer"]}
REQUIRED = {"dataset/csv": ["dataset.path=x.csv"],
            "teacher/torchscript": ["teacher.path=t.pt", "teacher.input_dim=3"],
            "teacher/onnx": ["teacher.path=t.onnx"],
            "teacher/custom": ["teacher.net._target_=my_nets.Wide"],
            "student/custom": ["student.net._target_=my_nets.Wide"]}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (REPO / "configs" / group).glob("*.yaml"))


CASES = [(cmd, g, o) for cmd, groups in GROUPS.items() for g in groups for o in options(g)]


@pytest.mark.parametrize("command,group,option", CASES)
def test_every_option_composes_and_validates(command, group, option):
    cfg = make_config(command, [f"{group}={option}", *REQUIRED.get(f"{group}/{option}", [])])
    if (group, option, command) == ("dataset", "none", "train_teacher"):
        with pytest.raises(UserError, match="dataset=none has no rows"):
            validate(cfg)  # a teacher needs rows to train on
        return
    if group == "arm":
        assert cfg.label == option
    elif group == "strategy":
        assert cfg.strategy.name == option
    else:
        assert cfg[group] is not None
    validate(cfg)


def test_defaults_are_the_papers_protocol_and_the_data_free_recipe():
    cfg = make_config("distill")
    assert (cfg.epochs, cfg.steps_per_epoch, cfg.batch_size) == (8000, 10, 50)  # 4x the paper's E
    assert cfg.optimizer.name == "rmsprop" and cfg.optimizer.lr == 1e-3
    assert cfg.optimizer.weight_decay == 1e-5
    assert list(cfg.teacher.hidden) == [500] and cfg.teacher.activation == "tanh"
    assert list(cfg.student.hidden) == [50] and cfg.alpha.schedule == "decreasing"
    assert (cfg.strategy.name, cfg.strategy.steps, cfg.strategy.lr) == ("bounded", 2, 0.1)
    assert (cfg.selection, cfg.prior, cfg.domain) == ("fidelity", "auto", "off")
    assert cfg.stop == "off"  # the stopping rule missed its target (docs/results.md)
    teacher = make_config("train_teacher")
    assert (teacher.epochs, teacher.batch_size, teacher.patience) == (500, 16, 50)


def test_the_paper_preset_pins_the_papers_recipe():
    """experiment=paper reproduces the paper whatever distill's defaults are: N(0, I), no input
    domain, validation and last selections, E = 2000 x n_s = 10."""
    cfg = make_config("distill", ["experiment=paper"])
    assert (cfg.prior, cfg.domain, cfg.selection) == ("gaussian", "off", "both")
    assert (cfg.epochs, cfg.steps_per_epoch) == (2000, 10)
    assert cfg.stop == "off"  # every epoch of E, whatever stop= defaults to


def test_data_dir_reads_environment(monkeypatch):
    monkeypatch.setenv("DFKD_DATA_DIR", "/somewhere/else")
    assert make_config("distill").data_dir == "/somewhere/else"


@pytest.mark.parametrize("override", ["epochs=many", "strategy.steps=two", "seed=1.5"])
def test_wrong_type_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ValidationError)):
        make_config("distill", [override])


@pytest.mark.parametrize("override", ["strategy.stepz=3", "student.width=3", "epochz=3"])
def test_unknown_key_fails_at_compose(override):
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        make_config("distill", [override])


def test_strategy_keys_of_another_strategy_are_refused():
    with pytest.raises(ConfigCompositionException):
        make_config("distill", ["strategy=random", "strategy.steps=3"])


@pytest.mark.parametrize("override,key", [
    ("epochs=0", "epochs"), ("batch_size=0", "batch_size"), ("optimizer.lr=-1", "optimizer.lr"),
    ("alpha=constant", None), ("alpha.value=1.5", "alpha.value"), ("selection=best", "selection"),
    ("student.hidden=[]", "student.hidden"), ("student.activation=swish", "student.activation"),
    ("strategy.lr=0", "strategy.lr"), ("strategy.steps=-1", "strategy.steps"),
    ("student=custom", "student.net._target_"), ("fast_path=on", "fast_path"),
    ("optimizer.name=Adamm", "optimizer.name"), ("student.name=vit", "student.name"),
    ("dataset.input_shape=[4]", "dataset.input_shape"),
    ("alpha.horizon=0", "alpha.horizon"), ("dataset.n_features=4", "dataset.n_features"),
])
def test_out_of_range_values_name_the_key(override, key):
    cfg = make_config("distill", [override])
    _refused_by_key(cfg, key)


@pytest.mark.parametrize("overrides,key", [  # issue 24, items 6 and 7
    (["student=rbf", "student.net.units=0"], "student.net.units"),
    (["student=rbf", "student.net.units=-3"], "student.net.units"),
    (["student=resmlp", "student.net.width=0"], "student.net.width"),
    (["student=resmlp", "student.net.width=abc"], "student.net.width"),
    (["student=cnn", "student.net.channels=[0]"], "student.net.channels"),
    (["student=cnn", "student.net.channels=[]"], "student.net.channels"),
    (["student=resmlp", "student.net.blocks=2"], None),
])
def test_a_built_in_networks_sizes_are_whole_numbers_from_one(overrides, key):
    _refused_by_key(make_config("distill", overrides), key)


def _refused_by_key(cfg, key: str | None) -> None:
    if key is None:  # a valid value: no error
        validate(cfg)
        return
    with pytest.raises(UserError, match=rf"^{key}=.* is not valid: expected"):
        validate(cfg)


def test_every_config_folder_ships_in_the_wheel():
    pyproject = (REPO / "pyproject.toml").read_text()
    folders = [f for f in (REPO / "configs").rglob("*") if f.is_dir() and any(f.glob("*.yaml"))]
    assert REPO / "configs" / "hydra" / "launcher" in folders  # nested folders too
    for folder in folders:
        rel = folder.relative_to(REPO / "configs").as_posix()
        package = "dfkd_cli.configs." + rel.replace("/", ".")
        assert f'"{package}" = "configs/{rel}"' in pyproject
        assert f'"{package}" = ["*.yaml"]' in pyproject
        assert f'"{package}",' in pyproject


def test_optimisers_by_name_or_target_with_their_own_keys():
    from dfkd_cli.nets.optim import make_optimizer

    cfg = make_config("distill", ["optimizer=adam", "+optimizer.kwargs.betas=[0.8,0.9]"])
    validate(cfg)
    opt = make_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Adam) and opt.defaults["betas"] == (0.8, 0.9)
    cfg = make_config("distill", ["optimizer._target_=torch.optim.Adagrad"])
    validate(cfg)
    assert type(make_optimizer(cfg.optimizer, [torch.nn.Parameter(torch.zeros(2))])) is \
        torch.optim.Adagrad
    with pytest.raises(UserError, match="^optimizer._target_=collections.OrderedDict is not a "):
        validate(make_config("distill", ["optimizer._target_=collections.OrderedDict"]))


def _restated(raw: dict, schema: dict, prefix: str = "") -> list[str]:
    """The keys of `raw` (nested) whose value is the one `schema` gives them already."""
    found = []
    for key, value in raw.items():
        if key not in schema or (key == "defaults" and not prefix):
            continue
        if isinstance(value, dict) and isinstance(schema[key], dict):
            found += _restated(value, schema[key], f"{prefix}{key}.")
        elif value == schema[key]:
            found.append(f"{prefix}{key}={value!r}")
    return found


def restated_defaults() -> list[str]:
    """Every key a YAML file under configs/ sets to the default of the schema its defaults list
    starts from (`/schema/<group>/<name>` or `<command>_schema`)."""
    register_configs()
    store = ConfigStore.instance()
    found = []
    for path in sorted((REPO / "configs").rglob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        schemas = [d.split("@")[0].lstrip("/") for d in (raw or {}).get("defaults", [])
                   if isinstance(d, str) and "schema" in d]
        if schemas:
            schema = OmegaConf.to_container(store.load(f"{schemas[0]}.yaml").node, resolve=False)
            found += [f"{path.relative_to(REPO)}: {key}" for key in _restated(raw, schema)]
    return found


def test_no_yaml_restates_a_schema_default():
    # one place for every default: a YAML value equal to the schema's would silently win the
    # day the schema's default changes
    assert restated_defaults() == []


def test_the_restatement_check_sees_a_restated_default(tmp_path, monkeypatch):
    planted = tmp_path / "configs" / "strategy"
    planted.mkdir(parents=True)
    (planted / "bounded.yaml").write_text(
        "defaults:\n  - /schema/strategy/bounded@_here_\n  - _self_\nsteps: 2\nlr: 0.5\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert restated_defaults() == ["configs/strategy/bounded.yaml: steps=2"]


def test_any_first_order_torch_optimiser_works_and_lbfgs_is_refused_by_name():
    """Issue 24, item 8: weight_decay goes only to a class that takes it (Rprop takes none), and
    LBFGS, whose step needs a closure, is refused with a line that says why."""
    from dfkd_cli.nets.optim import make_optimizer
    params = [torch.nn.Parameter(torch.ones(3))]
    cfg = make_config("distill", ["optimizer.name=Rprop"]).optimizer
    rprop = make_optimizer(cfg, params)
    assert isinstance(rprop, torch.optim.Rprop) and rprop.defaults["lr"] == cfg.lr
    adam = make_optimizer(make_config("distill", ["optimizer=adam"]).optimizer, params)
    assert adam.defaults["weight_decay"] == 1e-5  # still passed where it is taken
    validate(make_config("distill", ["optimizer.name=Rprop"]))
    with pytest.raises(UserError, match="optimizer LBFGS is not valid here: its step needs a "
                                        "closure"):
        validate(make_config("distill", ["optimizer.name=LBFGS"]))
