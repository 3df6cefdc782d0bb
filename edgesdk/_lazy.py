"""Lazy public names for packages whose submodules load heavy runtimes (audio, vision)."""

from __future__ import annotations

import importlib
from typing import Callable, Mapping

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: Mapping[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` importing ``names[attr]`` (a relative module) on first use and caching it."""

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        namespace[name] = value
        return value

    return __getattr__
