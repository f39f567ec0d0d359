"""The one factory of networks: a module of an architecture record (nets/architecture.py), a
freshly initialised population (member k from its own random stream), or a population of given
weights. A custom class is imported and called with plain keyword arguments only here."""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
from torch import nn

from dfkd_cli.errors import UserError, reason
from dfkd_cli.nets import mlp
from dfkd_cli.nets.architecture import (
    BUILTINS,
    arch_name,
    checkpoint_arch,
    kind,
    read_arch,
    uses_fast_path,
)
from dfkd_cli.nets.population import ModulePopulation
from dfkd_cli.utils.rng import Streams


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
    name = arch["name"]
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


def _seeded_module(arch: dict[str, Any], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_module(arch)


def build(arch: dict[str, Any], rng: Streams, fast_path: str = "auto"):
    """A freshly initialised population, member k from its own random stream. An MLP starts
    from the same weights on both paths (StackedMLP.init_); any other network from its own
    initialisation, run under a seed drawn from the member's stream."""
    if kind(arch) == "mlp":
        stacked = mlp.StackedMLP(len(rng), arch["input_dim"], list(arch["hidden"]),
                                    arch["activation"], arch.get("output_dim", 1)
                                    ).to(rng.device).init_(rng)
        if uses_fast_path(arch, fast_path):
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
    if uses_fast_path(arch, fast_path):
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
