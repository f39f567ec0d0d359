"""The network seam: what the student loop, the strategies and train-teacher need from a network,
and the one factory that builds every network.

A *population* is K members of one architecture, run together: `pop(x)` maps (K, n, d) inputs to
(K, n, k) outputs, member k on x[k]; `pop.params` are its parameters, each (K, ...) with member
k's values at index k (so snapshots, finiteness checks and optimiser state are per member along
the first axis); `trace(x)` runs the forward pass keeping what a backward pass needs, and
`input_grad(saved, g)` / `param_grads(saved, g)` give dL/dx and dL/dparams for dL/d(output) = g;
`member_state_dict(k)` is member k as the state dict of one network. Two implementations:

- `mlp.StackedMLP`, the fast path: an MLP as batched matrix products with a hand-written
  backward pass, picked automatically for an MLP (`fast_path=auto`);
- `ModulePopulation`, the default for any differentiable `torch.nn.Module` (and for an MLP with
  `fast_path=off`): K copies of the module whose parameters are views into the stacked (K, ...)
  parameters, run one after the other, gradients by autograd. Member k computes exactly what a
  single run of member k computes (torch.func.vmap would batch them, but not bit for bit; see
  docs/performance.md). A built-in network may also give `population_forward(params, x)`, its
  forward pass for all members at once from the stacked parameters, written so that member k's
  numbers do not depend on the population (the rbf); without gradients (a gradient-free
  strategy's many evaluations, predictions) and under fast_path=auto, the population uses it.

An architecture is a plain dict (what a checkpoint records, loadable with weights only): its
`name` (`mlp`, a built-in of dfkd_cli/nets/builtin.py, or `custom`), `input_dim`, `output_dim`, and the
keyword arguments of its constructor: `hidden` and `activation` for an MLP, `kwargs` for the
others, and for `custom` the `target` class. The record is data, read by one function,
`read_arch`: a known name, keyword arguments that are plain values (numbers, strings, booleans,
lists of them), no `_target_` anywhere. A checkpoint never makes dfkd import code: a custom class
is imported (and called, never recursively instantiated) only when the user names that same class
in the command (`checkpoint_arch`).
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
from typing import Any, Protocol

import torch
from omegaconf import OmegaConf
from torch import nn

from dfkd_cli.errors import UserError, reason
from dfkd_cli.nets import builtin, mlp
from dfkd_cli.utils.rng import Streams

BUILTINS: dict[str, type] = {"rbf": builtin.RBF, "resmlp": builtin.ResMLP, "cnn": builtin.CNN}
NAMES = ("mlp", *BUILTINS, "custom")
FAST_PATHS = ("auto", "off")
TARGET = "_target_"


class Net(Protocol):
    """What a strategy asks of a teacher or a student population: the forward pass
    (K, n, d) -> (K, n, k) and, for the strategies that follow dL/dx, the backward pass to the
    inputs (a teacher that cannot be differentiated has no `trace`: build_strategy refuses it
    to those strategies)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]: ...

    def input_grad(self, saved: list[torch.Tensor], grad_out: torch.Tensor) -> torch.Tensor: ...


class AutogradBackward:
    """`trace` / `input_grad` / `param_grads` through autograd, for a population whose forward
    pass is differentiable (a module of any kind, a TorchScript teacher)."""

    params: list[torch.Tensor] = []

    def trace(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            return [x, self(x)]

    def input_grad(self, saved: list[torch.Tensor], grad_out: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(saved[-1], saved[0], grad_out)[0]

    def param_grads(self, saved: list[torch.Tensor], grad_out: torch.Tensor
                    ) -> list[torch.Tensor]:
        return list(torch.autograd.grad(saved[-1], self.params, grad_out))


ALIGN = 16  # floats: 64 bytes, the widest vector a CPU kernel loads


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """t itself when it starts on a 64-byte boundary, else a fresh (aligned) copy: a matrix
    product's rounding can depend on where its operands start, and a member's numbers must not
    depend on where its slice of the population lies."""
    return t if t.data_ptr() % (4 * ALIGN) == 0 else t.clone()


def _aligned_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """torch.stack(tensors), each member's slice starting on a 64-byte boundary (a gap after
    each member when its size is not a multiple of 16 floats)."""
    first = tensors[0]
    step = -(-first.numel() // ALIGN) * ALIGN
    flat = torch.zeros(len(tensors) * step, dtype=first.dtype, device=first.device)
    out = flat.as_strided((len(tensors), *first.shape), (step, *first.contiguous().stride()))
    for k, t in enumerate(tensors):
        out[k].copy_(t)
    return out


class _Stack(torch.autograd.Function):
    """torch.stack over the members' outputs whose backward hands each member an aligned copy of
    its slice of the gradient (torch.stack's would be views at any offset)."""

    @staticmethod
    def forward(ctx, *outputs):
        return torch.stack(outputs)

    @staticmethod
    def backward(ctx, grad):
        return tuple(g.clone() for g in grad.unbind(0))


class ModulePopulation(AutogradBackward, nn.Module):
    """K networks of one architecture as a population (see the module docstring).

    `params` are the stacked (K, ...) parameters (this module's own, for snapshots, checks and
    checkpoints); each member network holds views of its slices as its own parameters, and the
    optimiser steps those views (`opt_params`, member by member; `owners[i]` is the member of
    `opt_params[i]`), so every member's update is the same computation as in a single run."""

    def __init__(self, members: list[nn.Module], batched: bool = True):
        super().__init__()
        # a built-in network may offer `population_forward(params, x)`, all members in one
        # batched program; used without gradients (batched=False: the member loop throughout)
        self.batched = getattr(type(members[0]), "population_forward", None) if batched else None
        self.names = [name for name, _ in members[0].named_parameters()]
        self.buffer_names = [name for name, _ in members[0].named_buffers()]
        self.stacked = nn.ParameterList(
            nn.Parameter(_aligned_stack([m.get_parameter(n).detach() for m in members]))
            for n in self.names)
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}",
                                 _aligned_stack([m.get_buffer(name) for m in members]))
        self.nets = list(members)  # a plain list: their parameters are views, not our own
        self.params = list(self.stacked)
        self._bind()

    @property
    def members(self) -> int:
        return len(self.nets)

    def _bind(self) -> None:
        """Point every member's parameters and buffers at its slice of the stacked tensors."""
        buffers = [getattr(self, f"buffer{i}") for i in range(len(self.buffer_names))]
        self.opt_params, self.owners = [], []
        for k, net in enumerate(self.nets):
            for name, stacked in zip(self.names, self.params):
                owner, _, leaf = name.rpartition(".")
                view = nn.Parameter(stacked.data[k], requires_grad=stacked.requires_grad)
                setattr(net.get_submodule(owner), leaf, view)
                self.opt_params.append(view)
                self.owners.append(k)
            for name, stacked in zip(self.buffer_names, buffers):
                owner, _, leaf = name.rpartition(".")
                net.get_submodule(owner)._buffers[leaf] = stacked[k]

    def _apply(self, fn, recurse=True):  # .to(device), .double(): rebind the members' views
        out = super()._apply(fn, recurse)
        self._bind()
        return out

    def requires_grad_(self, requires_grad: bool = True) -> "ModulePopulation":
        for p in [*self.params, *self.opt_params]:
            p.requires_grad_(requires_grad)
        return self

    def train(self, mode: bool = True) -> "ModulePopulation":
        super().train(mode)
        for net in self.nets:
            net.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.batched is not None and not torch.is_grad_enabled():
            return self.batched(dict(zip(self.names, self.params)), x)
        if len(self.nets) == 1:  # x[0] and the gradient of the output start where x and it do
            return mlp.columns(self.nets[0](_aligned(x[0]))).unsqueeze(0)
        outputs = [mlp.columns(net(_aligned(x[k]))) for k, net in enumerate(self.nets)]
        # without gradients (a gradient-free strategy's many forward passes) a plain stack
        return _Stack.apply(*outputs) if torch.is_grad_enabled() else torch.stack(outputs)

    def param_grads(self, saved: list[torch.Tensor], grad_out: torch.Tensor
                    ) -> list[torch.Tensor]:
        """dL/d(opt_params), member by member."""
        grads = torch.autograd.grad(saved[-1], self.opt_params, grad_out, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(self.opt_params, grads)]

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return {name: value.detach().clone() for name, value in self.nets[k].state_dict().items()}


# ---------------------------------------------------------------------------------------------
# architectures


def plain(value: Any) -> Any:
    """A config value as plain containers (what torch.load(weights_only=True) reads back)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def describe(net_cfg, input_dim: int, output_dim: int, input_shape: list[int] | None = None
             ) -> dict[str, Any]:
    """The architecture a `student` / `teacher` config names, sizes filled in: input and output
    from the dataset / teacher, a cnn's input shape from the dataset or the teacher."""
    name = net_cfg.get("name", "mlp")  # a config saved before networks had names: an MLP
    arch: dict[str, Any] = {"name": name, "input_dim": int(input_dim),
                            "output_dim": int(output_dim)}
    if name == "mlp":
        return arch | {"hidden": list(net_cfg.hidden), "activation": net_cfg.activation}
    kwargs = dict(plain(net_cfg.get("net")) or {})
    if name == "custom":
        arch["target"] = kwargs.pop(TARGET)
    if input_shape and "input_shape" not in kwargs and accepts(arch, "input_shape"):
        kwargs["input_shape"] = list(input_shape)
    return arch | {"kwargs": kwargs}


def accepts(arch: dict[str, Any], key: str) -> bool:
    """True when the architecture's constructor takes keyword `key` (built-ins only: a custom
    class is not imported to find out)."""
    cls = BUILTINS.get(arch["name"])
    return cls is not None and key in inspect.signature(cls).parameters


def kwarg_parts(arch: dict[str, Any]) -> list[tuple[str, str]]:
    """(keyword, its text in a name) for the keyword arguments a name shows: lists as 4x8;
    sizes from the data (input_shape) are left out."""
    return [(k, "x".join(map(str, v)) if isinstance(v, list) else str(v))
            for k, v in sorted(arch.get("kwargs", {}).items()) if k != "input_shape"]


def arch_name(arch: dict[str, Any], qualified: bool = False) -> str:
    """A short name for an architecture (the tables' column; qualified: the teacher store's key):
    e.g. 'mlp500-tanh', 'rbf-units50', 'Wide-width128' (qualified: 'my_nets.Wide-width128', so
    classes of one name in two modules never share a store folder)."""
    name = arch.get("name", "mlp")
    if name == "mlp":
        return mlp.arch_name(list(arch["hidden"]), arch["activation"])
    base = name
    if name == "custom":
        base = arch["target"] if qualified else arch["target"].rpartition(".")[2]
    return base + "".join(f"-{k}{text}" for k, text in kwarg_parts(arch))


PLAIN = (bool, int, float, str)  # what an architecture's keyword argument may be (or a list)
ARCH_KEYS = {"mlp": {"name", "input_dim", "output_dim", "hidden", "activation"},
             "custom": {"name", "input_dim", "output_dim", "target", "kwargs"}}
DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def _targets(node: Any, where: str) -> list[str]:
    """Where `_target_` occurs as a key anywhere inside `node` (dicts and lists, any depth)."""
    if isinstance(node, dict):
        return [*([f"{where}.{TARGET}"] if TARGET in node else []),
                *(found for k, v in node.items() for found in _targets(v, f"{where}.{k}"))]
    if isinstance(node, (list, tuple)):
        return [found for i, v in enumerate(node) for found in _targets(v, f"{where}[{i}]")]
    return []


def refuse_targets(arch: Any, source: str) -> None:
    """A UserError when `_target_` occurs anywhere in the architecture record."""
    found = _targets(arch, "arch")
    if found:
        raise UserError(f"{source} names code to run in its architecture ({found[0]}); an "
                        "architecture is data and dfkd never builds what a file names")


def _plain(value: Any) -> bool:
    """A number, string or boolean (or None), or a list of them."""
    if value is None or isinstance(value, PLAIN):
        return True
    return isinstance(value, (list, tuple)) and all(v is None or isinstance(v, PLAIN)
                                                    for v in value)


def read_arch(arch: Any, source: str) -> dict[str, Any]:
    """The one reader of an architecture record (a checkpoint's `arch`, or what `describe` made
    of a config): a plain copy, or a UserError naming `source` and the key. The record is data:
    a known name (mlp, a built-in, custom with a dotted class name), sizes that are integers,
    keyword arguments that are plain values, and no `_target_` anywhere in it (dfkd never builds
    what a file names). Nothing is imported here."""
    if not isinstance(arch, dict):
        raise UserError(f"{source}: its architecture is a {type(arch).__name__}, not a record")
    refuse_targets(arch, source)
    name = arch.get("name", "mlp")
    if name not in NAMES:
        raise UserError(f"{source} holds the unknown network name {name!r} (arch.name); dfkd "
                        f"builds {', '.join(NAMES)}")
    allowed = ARCH_KEYS.get(name, ARCH_KEYS["custom"] - {"target"})
    extra = sorted(set(map(str, arch)) - allowed)
    if extra:
        raise UserError(f"{source}: a {name} architecture has no key arch.{extra[0]}")
    for key in ("input_dim", "output_dim"):
        if key in arch and not (isinstance(arch[key], int) and not isinstance(arch[key], bool)):
            raise UserError(f"{source}: arch.{key} is not an integer ({arch[key]!r})")
    clean = dict(arch)
    if name == "mlp":
        hidden, activation = arch.get("hidden"), arch.get("activation")
        if not (isinstance(hidden, (list, tuple)) and all(
                isinstance(h, int) and not isinstance(h, bool) for h in hidden)):
            raise UserError(f"{source}: arch.hidden is not a list of integers ({hidden!r})")
        if not isinstance(activation, str):
            raise UserError(f"{source}: arch.activation is not a name ({activation!r})")
        return clean | {"hidden": list(hidden)}
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise UserError(f"{source}: arch.kwargs is not a mapping ({type(kwargs).__name__})")
    for key, value in kwargs.items():
        if not isinstance(key, str) or not key.isidentifier() or not _plain(value):
            raise UserError(f"{source}: arch.kwargs.{key} is not a plain value (numbers, "
                            f"strings, booleans, lists of them): {value!r}")
    clean["kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    if name == "custom" and not (isinstance(arch.get("target"), str)
                                 and DOTTED.fullmatch(arch["target"])):
        raise UserError(f"{source}: arch.target is not a dotted class name "
                        f"({arch.get('target')!r})")
    return clean


def check_target(arch: dict[str, Any], named: str | None, key: str, source: str) -> None:
    """A custom architecture is built only when the user named its target (`named`), so that a
    checkpoint never imports code on its own; otherwise a UserError saying what to pass."""
    if arch.get("name") == "custom" and named != arch["target"]:
        raise UserError(f"{source} holds the custom network {arch['target']}; dfkd imports "
                        f"a checkpoint's code only when you name it: pass {key}={arch['target']}")


def checkpoint_arch(arch: Any, named: str | None, key: str, source: str) -> dict[str, Any]:
    """A checkpoint's architecture, ready to build: `read_arch`'s checks, and a custom class only
    when the user `named` that same class in this command (`key` is how to name it). Every
    reader that builds a network from a file goes through here."""
    arch = read_arch(arch, source)
    check_target(arch, named, key, source)
    return arch


def custom_class(target: str) -> type:
    """The class `target` (package.module.Class) names, imported; a UserError unless it is a
    torch.nn.Module subclass (so what is called next is a network's constructor)."""
    module_name, _, attr = target.rpartition(".")
    try:
        found: Any = importlib.import_module(module_name)
        found = getattr(found, attr)
    except Exception as exc:  # noqa: BLE001 - a missing module or class: the user's to fix
        raise UserError(f"network {target} could not be imported: {type(exc).__name__}: "
                        f"{reason(exc)}") from exc
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UserError(f"network {target} is not a torch.nn.Module class")
    return found


def make_module(arch: dict[str, Any]) -> nn.Module:
    """One network of the architecture (read by `read_arch`), initialised from torch's global
    random stream. A custom class is imported and called with plain keyword arguments; nothing
    in them is instantiated."""
    arch = read_arch(arch, "the architecture")
    name = arch.get("name", "mlp")
    d, k = arch["input_dim"], arch.get("output_dim", 1)
    if name == "mlp":
        return mlp.mlp(d, list(arch["hidden"]), arch["activation"], k)
    kwargs = dict(arch.get("kwargs", {}))
    if name in BUILTINS:
        return BUILTINS[name](d, k, **kwargs)
    cls = custom_class(arch["target"])
    try:
        return cls(input_dim=d, output_dim=k, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a wrong keyword: the user's class
        raise UserError(f"network {arch['target']} could not be built with input_dim={d}, "
                        f"output_dim={k} and {kwargs}: {reason(exc)}") from exc


def fast(arch: dict[str, Any], fast_path: str) -> bool:
    """True when the architecture runs on the fast path (an MLP, unless fast_path=off)."""
    return arch.get("name", "mlp") == "mlp" and fast_path == "auto"


def _seeded_module(arch: dict[str, Any], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_module(arch)


def build(arch: dict[str, Any], rng: Streams, fast_path: str = "auto"):
    """A freshly initialised population, member k from its own random stream. An MLP starts
    from the same weights on both paths (StackedMLP.init_); any other network from its own
    initialisation, run under a seed drawn from the member's stream."""
    if arch.get("name", "mlp") == "mlp":
        stacked = mlp.StackedMLP(len(rng), arch["input_dim"], list(arch["hidden"]),
                                    arch["activation"], arch.get("output_dim", 1)
                                    ).to(rng.device).init_(rng)
        if fast(arch, fast_path):
            return stacked
        return from_states(arch, [stacked.member_state_dict(k) for k in range(len(rng))],
                           fast_path, rng.device)
    seeds = [int(torch.randint(2 ** 62, (1,), generator=g, device=rng.device))
             for g in rng.generators]
    members = [_seeded_module(arch, s) for s in seeds]
    check_trainable(members[0], arch)
    return ModulePopulation(members, fast_path == "auto").to(rng.device)


def check_trainable(module: nn.Module, arch: dict[str, Any]) -> None:
    """A network the loop can fit: parameters to train, and (n, d) inputs to (n, k) outputs
    (one forward pass of zeros in eval mode, which draws no random numbers)."""
    name = arch.get("target") or arch_name(arch)
    d, k = arch["input_dim"], arch.get("output_dim", 1)
    if not any(p.requires_grad for p in module.parameters()):
        raise UserError(f"network {name} has no parameters to train")
    training = module.training
    try:
        with torch.no_grad():
            out = module.eval()(torch.zeros(2, d))
    except Exception as exc:  # noqa: BLE001 - whatever the user's forward raises
        raise UserError(f"network {name} fails on a batch of (2, {d}) inputs: "
                        f"{type(exc).__name__}: {reason(exc)}") from exc
    finally:
        module.train(training)
    if not torch.is_tensor(out) or tuple(mlp.columns(out).shape) != (2, k):
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise UserError(f"network {name} maps (2, {d}) inputs to {shape}; expected (2, {k}) "
                        f"({k} output{'s' if k > 1 else ''}: the teacher's)")


def from_states(arch: dict[str, Any], states: list[dict[str, torch.Tensor]],
                fast_path: str = "auto", device: torch.device | str = "cpu"):
    """A population of the given members' weights (one state dict each)."""
    if fast(arch, fast_path):
        return mlp.StackedMLP.from_state_dicts(states, arch["activation"]).to(device)
    members = []
    for state in states:
        module = _seeded_module(arch, 0)  # its initial weights are overwritten
        try:
            module.load_state_dict(state)
        except (RuntimeError, KeyError, TypeError) as exc:  # missing keys, wrong shapes
            raise UserError(f"the weights do not fit network {arch_name(arch)} (a damaged or "
                            f"edited checkpoint): {reason(exc)}") from exc
        members.append(module)
    return ModulePopulation(members, fast_path == "auto").to(device)


def from_checkpoint(payload: dict[str, Any], named: str | None, key: str, source: str
                    ) -> nn.Module:
    """The one network a checkpoint holds, its weights loaded (a custom network only when the
    user `named` its target; `key` is how to name it)."""
    arch = checkpoint_arch(payload["arch"], named, key, source)
    return from_states(arch, [payload["state_dict"]], "off").nets[0]


def count_parameters(module: nn.Module) -> int:
    return sum(math.prod(p.shape) for p in module.parameters())


def config_arch_name(net_cfg, qualified: bool = False) -> str:
    """The name of the architecture a `teacher` / `student` config names (qualified: the
    store's key)."""
    return arch_name(describe(net_cfg, 0, 0), qualified)
