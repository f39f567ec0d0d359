"""An architecture: the plain record of a network that a config names and a checkpoint keeps,
its name in tables and in the teacher store, and the one reader of such a record from a file.

A record is a dict: its `name` (`mlp`, a built-in of dfkd_cli/nets/builtin.py, or `custom`),
`input_dim`, `output_dim`, and the keyword arguments of its constructor: `hidden` and
`activation` for an MLP, `kwargs` for the others, and for `custom` the `target` class. The record
is data, read by one function, `read_arch`: a known name, keyword arguments that are plain values
(numbers, strings, booleans, lists of them), no `_target_` anywhere. A checkpoint never makes
dfkd import code: a custom class is imported (nets/factory.py) only when the user names that same
class in the command (`checkpoint_arch`).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from omegaconf import OmegaConf

from dfkd_cli.errors import UserError
from dfkd_cli.nets import builtin, mlp

BUILTINS: dict[str, type] = {"rbf": builtin.RBF, "resmlp": builtin.ResMLP, "cnn": builtin.CNN}
NAMES = ("mlp", *BUILTINS, "custom")
FAST_PATHS = ("auto", "off")
TARGET = "_target_"


def kind(arch: Any) -> str:
    """The network name a record or config holds: one saved before networks had names is an
    MLP."""
    return arch.get("name", "mlp")


def to_plain(value: Any) -> Any:
    """A config value as plain containers (what torch.load(weights_only=True) reads back)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def describe(net_cfg, input_dim: int, output_dim: int, input_shape: list[int] | None = None
             ) -> dict[str, Any]:
    """The architecture a `student` / `teacher` config names, sizes filled in: input and output
    from the dataset / teacher, a cnn's input shape from the dataset or the teacher."""
    name = kind(net_cfg)
    arch: dict[str, Any] = {"name": name, "input_dim": int(input_dim),
                            "output_dim": int(output_dim)}
    if name == "mlp":
        return arch | {"hidden": list(net_cfg.hidden), "activation": net_cfg.activation}
    kwargs = dict(to_plain(net_cfg.get("net")) or {})
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
    name = kind(arch)
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


def _is_plain_value(value: Any) -> bool:
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
    name = kind(arch)
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
    clean = dict(arch) | {"name": name}
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
        if not isinstance(key, str) or not key.isidentifier() or not _is_plain_value(value):
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
    if kind(arch) == "custom" and named != arch["target"]:
        raise UserError(f"{source} holds the custom network {arch['target']}; dfkd imports "
                        f"a checkpoint's code only when you name it: pass {key}={arch['target']}")


def checkpoint_arch(arch: Any, named: str | None, key: str, source: str) -> dict[str, Any]:
    """A checkpoint's architecture, ready to build: `read_arch`'s checks, and a custom class only
    when the user `named` that same class in this command (`key` is how to name it). Every
    reader that builds a network from a file goes through here."""
    arch = read_arch(arch, source)
    check_target(arch, named, key, source)
    return arch


def uses_fast_path(arch: dict[str, Any], fast_path: str) -> bool:
    """True when the architecture runs on the fast path (an MLP, unless fast_path=off)."""
    return kind(arch) == "mlp" and fast_path == "auto"


def config_arch_name(net_cfg, qualified: bool = False) -> str:
    """The name of the architecture a `teacher` / `student` config names (qualified: the
    store's key)."""
    return arch_name(describe(net_cfg, 0, 0), qualified)
