"""YAML read as data: safe tags only, no anchors or aliases (a few hundred bytes of nested
aliases expand to gigabytes), a bounded size, and never an interpolation resolved (a `${...}`
in a file stays text: it never reads the environment or calls a resolver)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dfkd_cli.errors import UserError

MAX_BYTES = 8 << 20  # the largest YAML file dfkd reads (a spec of 100,000 features is ~5 MB)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading `1e-3` as a number, as OmegaConf (and the YAML 1.2 spec)
    does; PyYAML's YAML 1.1 rule wants a dot in the mantissa."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+][0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_text(text: str, what: str, max_bytes: int = MAX_BYTES) -> Any:
    """The data in YAML `text` (`what` names it in errors): plain dicts, lists and scalars."""
    if len(text) > max_bytes:
        raise UserError(f"{what} is larger than {max_bytes:,} bytes; dfkd reads smaller YAML")
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = "*" if isinstance(event, yaml.AliasEvent) else "&"
                raise UserError(f"{what} uses YAML anchors or aliases ({mark}{event.anchor} at "
                                f"line {event.start_mark.line + 1}); dfkd reads YAML without "
                                "them: write the values out in full")
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader
    except RecursionError as exc:
        raise UserError(f"{what} nests too deeply to be a dfkd YAML file") from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{what} is not valid YAML: {' '.join(str(exc).split())[:200]}") from exc


def load_file(path: str | Path, what: str | None = None, max_bytes: int = MAX_BYTES) -> Any:
    """The data in the YAML file `path` (its size checked before it is read)."""
    path = Path(path)
    what = what or str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise UserError(f"{what} is larger than {max_bytes:,} bytes; dfkd reads smaller YAML")
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {what}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} is not UTF-8 text (a YAML file)") from exc
    return load_text(text, what, max_bytes)
