"""Config name -> strategy class (torchdistill-style registry)."""

from __future__ import annotations

from typing import Callable

STRATEGIES: dict[str, type] = {}


def register(name: str) -> Callable[[type], type]:
    def add(cls: type) -> type:
        if name in STRATEGIES:
            raise ValueError(f"strategy {name!r} is registered twice")
        STRATEGIES[name] = cls
        return cls
    return add
