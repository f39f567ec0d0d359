"""Typed schemas for every config, registered in Hydra's ConfigStore.

Each YAML file under configs/ starts from one of these schemas (its defaults list names
`/schema/<group>/<name>`), so an unknown key or a value of the wrong type fails when Hydra
composes the config, before any work. Every default lives here, once: a YAML file sets only what
differs from its schema (tests/test_config.py checks). Range checks that a type cannot express
live beside the schema they check (`checks`); `validate`, which every command calls first, runs
those of the command's schema.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dfkd_cli.data.priors import PRIORS
from dfkd_cli.errors import UserError
from dfkd_cli.loop.selection import SELECTIONS
from dfkd_cli.loop.settings import STOPS
from dfkd_cli.nets.activations import ACTIVATIONS as ACTIVATION_SPECS
from dfkd_cli.nets.architecture import BUILTINS, FAST_PATHS, TARGET
from dfkd_cli.nets.architecture import NAMES as NET_NAMES
from dfkd_cli.nets.optim import NAMES as OPTIMIZER_NAMES
from dfkd_cli.nets.optim import check_steps_alone, optimizer_class
from dfkd_cli.strategies.schemas import SCHEMAS as STRATEGIES
from dfkd_cli.strategies.schemas import no_rows
from dfkd_cli.tracking import objectives

ACTIVATIONS = tuple(ACTIVATION_SPECS)
OPTIMIZERS = tuple(OPTIMIZER_NAMES)
DOMAIN_SWITCH = ("on", "off")
NONFINITE = ("stop", "skip")
ALPHA_SCHEDULES = ("decreasing", "increasing", "constant")
DATASET_SOURCES = ("builtin", "csv", "benchmark", "mnist", "none")
TEACHER_FORMATS = ("dfkd", "torchscript", "onnx", "sklearn")
MAX_EPOCHS = 1_000_000  # 500x the paper's 2000; more is a typo (epochs=1e20), not a plan
MAX_SEED = 2**32 - 1  # numpy's seeding takes [0, 2**32 - 1]
# a dataset name is a folder of the teacher store: a plain name, never a path
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")


@dataclass
class DatasetConfig:
    """Where the rows come from and how they are split (the paper: 5000 train, rest 10/90)."""

    name: str = MISSING  # the dataset's name in tables and the teacher store (set by dataset=)
    # builtin | csv | benchmark | mnist (IDX files) | none (no rows: nothing to score on)
    source: str = "benchmark"
    path: Optional[str] = None  # csv only
    target: Any = None  # target column, or a list of them (multi-output); None = last column
    drop: List[str] = field(default_factory=list)  # columns to leave out (csv only)
    nonfinite: str = "error"  # rows with missing / infinite values: error | drop (counted in the log)
    n_rows: int = 8000  # builtin only
    noise: float = 1.0  # builtin only
    n_features: int = 10  # builtin only: Friedman #1's first 5 informative, the rest noise
    parts: List[str] = field(default_factory=lambda: ["t10k"])  # mnist only: IDX file prefixes
    # the shape of one row's inputs, e.g. [1, 28, 28] (a cnn's [channels, length] or [channels,
    # height, width]), flattened in the columns' order
    input_shape: Optional[List[int]] = None
    n_train: int = 5000  # training rows (the paper's 5000)
    val_fraction: float = 0.1  # of the rows left after training: validation (the rest: test)
    max_train_fraction: float = 0.7  # a smaller table trains on this fraction of its rows


@dataclass
class NetConfig:
    """A network (dfkd_cli/nets/architecture.py): `name` mlp (input -> hidden... -> outputs, one
    activation throughout), a built-in of dfkd_cli/nets/builtin.py (rbf, resmlp, cnn) with its keyword
    arguments in `net`, or custom: the class `net._target_` with the rest of `net` as keyword
    arguments. Input and output sizes come from the dataset and the teacher."""

    name: str = "mlp"  # mlp | rbf | resmlp | cnn | custom (set by the group option)
    hidden: List[int] = field(default_factory=lambda: [50])  # mlp only: hidden layer sizes
    activation: str = "tanh"  # mlp only
    # the network's keyword arguments (rbf, resmlp, cnn; custom: _target_, the class)
    net: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig(NetConfig):
    """The teacher: its architecture (the store key) or a file the user names.

    format=dfkd loads a checkpoint written by `dfkd train-teacher` for the network the keys of
    NetConfig name (from the store unless `path`
    is given); format=torchscript a TorchScript or torch.export file and format=onnx an ONNX
    file from `path`, taking raw features and described by the spec keys below (inline, or in
    the YAML / CSV file `spec`; see dfkd_cli/teachers/spec.py); format=sklearn the scikit-learn
    regressor `estimator` names, fitted by train-teacher into the store as ONNX
    (dfkd_cli/teachers/scikit_learn.py).
    """

    hidden: List[int] = field(default_factory=lambda: [500])
    format: str = "dfkd"  # dfkd | torchscript | onnx | sklearn (fitted into the store as ONNX)
    estimator: Optional[Dict[str, Any]] = None  # sklearn: {_target_: <regressor class>, args}
    path: Optional[str] = None  # the teacher's file (default for dfkd: the store's)
    input_dim: Optional[int] = None  # when neither the file nor the spec says
    differentiable: bool = True  # false: refuse the strategies that need dT/dx
    # true: use a dfkd teacher whose checkpoint records other data (dataset, seed, split,
    # features or targets) than the run's; its test rows may then be the teacher's training rows
    allow_mismatch: bool = False
    spec: Optional[str] = None  # a YAML or CSV file with the keys below
    features: Optional[List[str]] = None  # the input columns' names, in order
    mean: Optional[List[float]] = None  # per feature: a prior draw z is the input mean + sd * z
    sd: Optional[List[float]] = None  # per feature: the inputs' standard deviation
    low: Optional[List[float]] = None  # per-feature box, raw units
    high: Optional[List[float]] = None  # per-feature box, raw units
    targets: Optional[List[str]] = None  # the output columns' names
    target_mean: Optional[List[float]] = None  # per output; default: estimated on prior draws
    target_sd: Optional[List[float]] = None  # per output; default: estimated on prior draws


@dataclass
class OptimizerConfig:
    """An optimiser: `name` (rmsprop | adam | sgd, or any other torch.optim class by its name,
    e.g. AdamW) or `_target_` (a dotted torch.optim.Optimizer class); `kwargs` holds any other
    keyword of its constructor (e.g. Adam's betas)."""

    name: str = "rmsprop"  # rmsprop | adam | sgd | any torch.optim class name (AdamW)
    lr: float = 1e-3  # learning rate
    weight_decay: float = 1e-5  # L2 penalty
    momentum: float = 0.0  # sgd and rmsprop
    _target_: Optional[str] = None  # a dotted torch.optim.Optimizer class, instead of name
    kwargs: Dict[str, Any] = field(default_factory=dict)  # more constructor keywords (betas)


@dataclass
class AlphaConfig:
    """alpha(t), the weight of the synthetic term in the student loss (paper Eq. 6)."""

    schedule: str = "decreasing"  # decreasing: 1-(t+1)/H | increasing: (t+1)/H | constant
    value: float = 1.0  # constant only
    # H, the epochs over which alpha moves (then it stays at its end: 0 decreasing, 1
    # increasing); null: H = epochs, the paper's schedule
    horizon: Optional[int] = None


@dataclass
class RunConfig:
    """Keys every command shares; these names are part of dfkd's interface."""

    command: str = MISSING  # set by the command
    seed: int = 1  # the split, the teacher and the run's random numbers
    seeds: Optional[List[int]] = None  # a population: K runs in one batched program
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: Optional[int] = 1  # torch CPU threads; null = torch's default (every core)
    keep_freed_memory: bool = True  # glibc malloc keeps freed blocks (runtime.keep_freed_memory)
    epochs: int = MISSING  # training epochs (the command sets its default)
    batch_size: int = MISSING  # rows per step (the command sets its default)
    # where dataset=<name> reads <name>.csv.gz (dfkd data fetch puts them there)
    data_dir: str = "${oc.env:DFKD_DATA_DIR,data}"
    # teachers by dataset / architecture / seed (train-teacher writes, distill reads)
    teacher_store: str = "${oc.env:DFKD_TEACHER_STORE,outputs/teachers}"
    progress: bool = True  # tqdm bars, shown only when stderr is a terminal
    # seconds between progress lines in the log (epoch, members training, fidelity or
    # validation figure, elapsed, ETA) of every command that trains; 0: none
    progress_every: float = 30.0
    log_every: int = 10  # epochs between history rows
    fast_path: str = "auto"  # auto: MLPs on the hand-written StackedMLP path | off: autograd
    # a YAML / CSV file in the teacher-spec format whose domain keys (type, levels, low, high,
    # simplex) replace the inferred / stored input domain of the features it names
    domain_spec: Optional[str] = None
    dataset: DatasetConfig = MISSING
    teacher: TeacherConfig = MISSING
    optimizer: OptimizerConfig = MISSING

    needs_rows: ClassVar[bool] = True  # the command refuses dataset=none

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        """Range checks of the shared keys; a command that needs rows refuses dataset=none."""
        _check_run(cfg)
        if cfg.dataset.source == "none" and cls.needs_rows:
            raise UserError(f"dataset=none has no rows, and dfkd {cfg.command} needs them; "
                            "give a dataset (dataset=csv dataset.path=<file>, or a named one)")


@dataclass
class TrainTeacherConfig(RunConfig):
    command: str = "train-teacher"
    epochs: int = 500  # at most (early stopping: patience)
    batch_size: int = 16  # the paper's
    log_every: int = 1  # epochs between history rows
    patience: int = 50  # early stopping on validation loss
    lr_factor: float = 0.5  # ReduceLROnPlateau
    # retrain a teacher the store holds already (else it is kept), and replace a finished run
    # in this run directory
    overwrite: bool = False
    # a run directory holding a finished run: leave it as it is (nothing to do); without it (or
    # overwrite=true) a rerun there is refused
    resume: bool = False

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        _check(cfg.patience >= 1, "patience", "an integer >= 1", cfg.patience)
        _check(0 < cfg.lr_factor < 1, "lr_factor", "a number in (0, 1)", cfg.lr_factor)


@dataclass
class StudentRunConfig(RunConfig):
    """The keys of a command that trains a student (the student loop's)."""

    steps_per_epoch: int = 10  # n_s, student steps per epoch
    batch_size: int = 50  # m, rows per step of x_g and of x_p each
    # last (data-free) | fidelity (data-free: best agreement with the teacher on a fixed set of
    # prior draws) | val (the paper's best epoch on real validation rows) | both (last and val)
    # | all (last, fidelity and val), from one training, a metrics row each
    selection: str = "last"
    on_nonfinite: str = "stop"  # stop (status=diverged) | skip (roll back and carry on)
    student: NetConfig = MISSING
    strategy: Any = MISSING
    alpha: AlphaConfig = MISSING

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        if cfg.dataset.source == "none" and "val" in SELECTIONS.get(cfg.selection, []):
            raise UserError(f"selection={cfg.selection} picks an epoch by validation rows, and "
                            "dataset=none has none; use selection=last or fidelity")
        _check(cfg.steps_per_epoch >= 1, "steps_per_epoch", "an integer >= 1",
               cfg.steps_per_epoch)
        _check(cfg.on_nonfinite in NONFINITE, "on_nonfinite", f"one of {NONFINITE}",
               cfg.on_nonfinite)
        _check(cfg.selection in SELECTIONS, "selection", f"one of {tuple(SELECTIONS)}",
               cfg.selection)
        _check_net("student", cfg.student)
        _check(cfg.alpha.schedule in ALPHA_SCHEDULES, "alpha.schedule",
               f"one of {ALPHA_SCHEDULES}", cfg.alpha.schedule)
        _check(0 <= cfg.alpha.value <= 1, "alpha.value", "a number in [0, 1]", cfg.alpha.value)
        _check(cfg.alpha.horizon is None or cfg.alpha.horizon >= 1, "alpha.horizon",
               "null (the run's epochs) or an integer >= 1", cfg.alpha.horizon)
        _check_strategy("strategy", cfg.strategy)
        if cfg.dataset.source == "none" and STRATEGIES[cfg.strategy.name].needs_rows:
            raise no_rows(cfg.strategy.name)


@dataclass
class DistillConfig(StudentRunConfig):
    command: str = "distill"
    # the data-free recipe (docs/results.md, "Closing the gap without data"): four times the
    # paper's E = 2000 (about a minute for one seed on a 2-core CPU), the teacher's copula
    # prior, and the epoch that agrees best with the teacher on a fixed synthetic set;
    # experiment=paper pins the paper's recipe
    epochs: int = 8000  # E: four times the paper's 2000 (the data-free recipe, docs/results.md)
    selection: str = "fidelity"
    # auto (copula when the teacher carries its input statistics) | gaussian N(0, I) |
    # correlated N(0, C) | copula (data/priors.py)
    prior: str = "auto"
    # on: project every labelled sample onto the teacher's input domain (with the copula prior
    # it measured worse on every dataset: docs/results.md)
    domain: str = "off"
    # move each synthetic image x_g by up to this many pixels each way before it is labelled
    # (image-shaped rows: data/images.py RandomShift); 0: off
    shift: int = 0
    # plateau: each member stops alone once its best RMSE on the fixed synthetic set (drawn
    # whatever the selection) has not improved by stop_tolerance (relative) for stop_patience
    # log points counted once alpha has settled (alpha.horizon); `epochs` is the cap | off:
    # run E epochs
    stop: str = "off"
    stop_patience: int = 20  # log points (of log_every epochs each) without an improvement
    stop_tolerance: float = 0.001  # relative improvement of the best fidelity RMSE that counts
    label: Optional[str] = None  # the arm's name in tables (set by arm=...); None = derived
    checkpoint_every: int = 100  # epochs between resumable checkpoints (0 = only on a signal)
    resume: bool = False  # continue the run in this run directory from its checkpoint
    # start over in a run directory that holds a finished run or a resumable checkpoint.pt
    # (replacing it); without it (or resume=true) such a rerun is refused
    overwrite: bool = False
    # what the job returns to a sweeper (dfkd_cli/tracking/search.py): a metrics column, mean over members
    objective: str = "fidelity_rmse_gaussian"
    logger: Dict[str, Any] = field(default_factory=dict)  # the `logger=` group (tracking/trackers.py)

    needs_rows: ClassVar[bool] = False  # dataset=none: distil only, scored on prior draws

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        _check(cfg.checkpoint_every >= 0, "checkpoint_every", "an integer >= 0",
               cfg.checkpoint_every)
        _check(cfg.prior in PRIORS, "prior", f"one of {PRIORS}", cfg.prior)
        _check(cfg.domain in DOMAIN_SWITCH, "domain", f"one of {DOMAIN_SWITCH}", cfg.domain)
        _check(cfg.shift >= 0, "shift", "an integer >= 0 (pixels)", cfg.shift)
        _check(cfg.stop in STOPS, "stop", f"one of {STOPS}", cfg.stop)
        _check(cfg.stop_patience >= 1, "stop_patience", "an integer >= 1 (log points)",
               cfg.stop_patience)
        _check(0 <= cfg.stop_tolerance < 1, "stop_tolerance", "a number in [0, 1)",
               cfg.stop_tolerance)
        objectives.check(cfg.objective, has_rows=cfg.dataset.source != "none")


@dataclass
class ProbeConfig(StudentRunConfig):
    """`dfkd probe`: a student trained for `epochs` epochs of `strategy` (random), then every
    strategy under `strategies` (label -> a strategy config) sampled against it."""

    command: str = "probe"
    epochs: int = 100  # the student's epochs before the probe
    strategies: Dict[str, Any] = field(default_factory=dict)  # label -> a strategy probed
    samples: int = 2000  # inputs drawn per strategy, in batches of batch_size
    # the quantiles of (T - S)^2 and ||x|| in probe.csv
    quantiles: List[float] = field(default_factory=lambda: [0.1, 0.5, 0.9, 0.99])
    # probe_images.png and probe_predictions.png; null = when dataset.input_shape is an image
    figures: Optional[bool] = None
    images: int = 8  # samples drawn per strategy in probe_images.png
    # where the student's strategy and every probed one draw x_p: gaussian N(0, I) (the paper's,
    # the probe's figures so far) | auto | correlated | copula, as distill's prior= (which
    # defaults to auto)
    prior: str = "gaussian"

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        super().check(cfg)
        _check(cfg.prior in PRIORS, "prior", f"one of {PRIORS}", cfg.prior)
        _check(cfg.samples >= 1, "samples", "an integer >= 1", cfg.samples)
        _check(all(0 <= q <= 1 for q in cfg.quantiles), "quantiles", "numbers in [0, 1]",
               list(cfg.quantiles))
        _check(cfg.images >= 1, "images", "an integer >= 1", cfg.images)
        for label, strategy in cfg.strategies.items():
            _check_strategy(f"strategies.{label}", strategy)


SCHEMAS: dict[str, type[RunConfig]] = {
    "train-teacher": TrainTeacherConfig, "distill": DistillConfig, "probe": ProbeConfig}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore (called before Hydra composes)."""
    cs = ConfigStore.instance()
    cs.store(name="train_teacher_schema", node=TrainTeacherConfig)
    cs.store(name="distill_schema", node=DistillConfig)
    cs.store(name="probe_schema", node=ProbeConfig)
    cs.store(group="schema/dataset", name="dataset", node=DatasetConfig)
    cs.store(group="schema/net", name="net", node=NetConfig)
    cs.store(group="schema/teacher", name="teacher", node=TeacherConfig)
    cs.store(group="schema/optimizer", name="optimizer", node=OptimizerConfig)
    cs.store(group="schema/alpha", name="alpha", node=AlphaConfig)
    for name, schema in STRATEGIES.items():
        cs.store(group="schema/strategy", name=name, node=schema)


def _check(ok: bool, key: str, valid: str, value: Any) -> None:
    if not ok:
        raise UserError(f"{key}={value!r} is not valid: expected {valid}")


def _check_net(prefix: str, net: Any) -> None:
    _check(net.name in NET_NAMES, f"{prefix}.name", f"one of {NET_NAMES}", net.name)
    target = net.net.get(TARGET) if not OmegaConf.is_missing(net.net, TARGET) else None
    if net.name == "custom":
        _check(isinstance(target, str) and bool(target), f"{prefix}.net._target_",
               "the dotted name of a torch.nn.Module class (custom networks)", target)
    elif target is not None:
        raise UserError(f"{prefix}.net._target_={target} names a custom network: add "
                        f"{prefix}=custom (now {prefix}.name={net.name})")
    if net.name in BUILTINS:
        _check_sizes(prefix, BUILTINS[net.name], net.net)
    if net.name != "mlp":
        return
    _check(len(net.hidden) >= 1 and all(h >= 1 for h in net.hidden), f"{prefix}.hidden",
           "a non-empty list of sizes >= 1", list(net.hidden))
    _check(net.activation in ACTIVATIONS, f"{prefix}.activation", f"one of {ACTIVATIONS}",
           net.activation)


def _check_sizes(prefix: str, cls: type, kwargs: Any) -> None:
    """A built-in network's sizes (an int default: units, width, blocks; a list of them:
    channels) are whole numbers >= 1: 0 builds a constant, -3 or 'abc' a traceback."""
    for name, param in inspect.signature(cls).parameters.items():
        default, value = param.default, kwargs.get(name)
        if value is None or name in ("input_dim", "output_dim", "input_shape"):
            continue
        if isinstance(default, int) and not isinstance(default, bool):
            _check(isinstance(value, int) and value >= 1, f"{prefix}.net.{name}",
                   "a whole number >= 1", value)
        elif isinstance(default, (list, tuple)):
            _check(OmegaConf.is_list(value) and len(value) >= 1 and all(
                isinstance(v, int) and v >= 1 for v in value), f"{prefix}.net.{name}",
                "a non-empty list of whole numbers >= 1", OmegaConf.to_object(value)
                if OmegaConf.is_config(value) else value)


def _check_optimizer(opt: Any) -> None:
    if opt._target_ is None:
        _check(opt.name in OPTIMIZERS or isinstance(getattr(torch.optim, opt.name, None), type),
               "optimizer.name", f"one of {OPTIMIZERS} or a torch.optim class", opt.name)
    check_steps_alone(optimizer_class(opt))  # a _target_ that is no optimiser class fails here
    _check(opt.lr > 0, "optimizer.lr", "a number > 0", opt.lr)
    _check(opt.weight_decay >= 0, "optimizer.weight_decay", "a number >= 0", opt.weight_decay)


def validate(cfg: DictConfig) -> None:
    """Range checks that types cannot express (those of the command's schema); raises UserError
    naming the key."""
    SCHEMAS[cfg.command].check(cfg)


def _check_run(cfg: DictConfig) -> None:
    _check(1 <= cfg.epochs <= MAX_EPOCHS, "epochs", f"an integer in [1, {MAX_EPOCHS}]",
           cfg.epochs)
    _check(0 <= cfg.seed <= MAX_SEED, "seed", f"an integer in [0, {MAX_SEED}]", cfg.seed)
    if cfg.seeds is not None:
        _check(len(cfg.seeds) >= 1, "seeds", "a non-empty list (or null: use seed=)",
               list(cfg.seeds))
        _check(all(0 <= s <= MAX_SEED for s in cfg.seeds), "seeds",
               f"integers in [0, {MAX_SEED}]", list(cfg.seeds))
    _check(cfg.batch_size >= 1, "batch_size", "an integer >= 1", cfg.batch_size)
    _check(cfg.log_every >= 1, "log_every", "an integer >= 1", cfg.log_every)
    _check(cfg.progress_every >= 0, "progress_every", "a number of seconds >= 0 (0: no lines)",
           cfg.progress_every)
    _check(cfg.threads is None or cfg.threads >= 1, "threads", "null or an integer >= 1",
           cfg.threads)
    _check_optimizer(cfg.optimizer)
    _check(cfg.fast_path in FAST_PATHS, "fast_path", f"one of {FAST_PATHS}", cfg.fast_path)
    _check_dataset(cfg.dataset)
    _check(cfg.teacher.format in TEACHER_FORMATS, "teacher.format", f"one of {TEACHER_FORMATS}",
           cfg.teacher.format)
    if cfg.teacher.format == "dfkd":
        _check_net("teacher", cfg.teacher)


def _check_dataset(ds: Any) -> None:
    _check(PLAIN_NAME.fullmatch(ds.name) is not None, "dataset.name",
           "a plain name (letters, digits, _ . + -; no path: it names a folder of the teacher "
           "store)", ds.name)
    _check(ds.source in DATASET_SOURCES, "dataset.source", f"one of {DATASET_SOURCES}", ds.source)
    _check(ds.nonfinite in ("error", "drop"), "dataset.nonfinite", "one of ('error', 'drop')",
           ds.nonfinite)
    _check(ds.n_train >= 2, "dataset.n_train", "an integer >= 2", ds.n_train)
    _check(ds.n_features >= 5, "dataset.n_features", "an integer >= 5 (Friedman #1 uses 5)",
           ds.n_features)
    _check(0 < ds.val_fraction < 1, "dataset.val_fraction", "a number in (0, 1)", ds.val_fraction)
    _check(0 < ds.max_train_fraction < 1, "dataset.max_train_fraction", "a number in (0, 1)",
           ds.max_train_fraction)
    _check(ds.source != "mnist" or (len(ds.parts) >= 1 and len(set(ds.parts)) == len(ds.parts)),
           "dataset.parts", "a non-empty list of IDX file prefixes, each once (t10k, train)",
           list(ds.parts))
    _check(ds.input_shape is None or (len(ds.input_shape) in (2, 3)
                                      and all(n >= 1 for n in ds.input_shape)),
           "dataset.input_shape", "null, [channels, length] or [channels, height, width]",
           ds.input_shape)


def _check_strategy(prefix: str, strategy: Any) -> None:
    _check(strategy.name in STRATEGIES, f"{prefix}.name", f"one of {tuple(STRATEGIES)}",
           strategy.name)
    for key, ok, valid in STRATEGIES[strategy.name].checks(strategy):
        _check(ok, f"{prefix}.{key}", valid, strategy[key])
