"""Model inputs for the command line and tools: random values from a signature, arrays from .npy files."""

from __future__ import annotations

from typing import Iterable, Mapping

import attrs
import numpy as np

from ._errors import InputError

__all__ = ["concrete_shape", "random_feed", "random_feeds", "parse_dims", "load_inputs"]


def concrete_shape(spec, dims: Mapping[str, int] | None = None) -> tuple[int, ...]:
    """A tensor spec's shape with each symbolic or unknown dim taken from ``dims`` (by name), else 1."""
    dims = dims or {}
    return tuple(d if isinstance(d, int) and d > 0 else dims.get(d, 1) for d in (spec.shape or ()))


def random_feed(spec, rng: np.random.Generator, dims: Mapping[str, int] | None = None):
    """A random value for one input: normal floats, zero ints/bools; symbolic dims from ``dims`` or 1.

    A sequence gets one random element, an optional a random value (not None), a map no entries.
    """
    kind = getattr(spec, "kind", "tensor")
    if kind == "sequence":
        # ORT never states element shapes; a one-element vector suits more ops than a scalar does.
        element = spec.element if spec.element.shape is not None else attrs.evolve(spec.element, shape=(1,))
        return [random_feed(element, rng, dims)]
    if kind == "optional":
        return random_feed(spec.element, rng, dims)
    if kind == "map":
        return {}
    shape = concrete_shape(spec, dims)
    if spec.dtype.kind == "f":
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype.kind in "iu":
        return np.zeros(shape, spec.dtype)
    if spec.dtype.kind == "b":
        return np.zeros(shape, bool)
    raise InputError(f"cannot make a random value for input {spec.name!r} of dtype {spec.dtype}; pass --input")


def random_feeds(specs, seed: int = 0, dims: Mapping[str, int] | None = None, given: Mapping[str, np.ndarray] | None = None) -> dict:
    """``given`` completed with a random value for every other input in ``specs``."""
    rng = np.random.default_rng(seed)
    feeds = dict(given or {})
    for spec in specs:
        if spec.name not in feeds:
            feeds[spec.name] = random_feed(spec, rng, dims)
    return feeds


def parse_dims(items: Iterable[str] | None) -> dict[str, int]:
    """``["batch=2", ...]`` -> ``{"batch": 2}`` (the CLI's --dim)."""
    dims = {}
    for item in items or []:
        sym, _, val = item.partition("=")
        if not val.isdigit() or int(val) < 1:
            raise InputError(f"--dim takes SYMBOL=N with N >= 1, got {item!r}")
        dims[sym] = int(val)
    return dims


def load_inputs(items: Iterable[str] | None) -> dict[str, np.ndarray]:
    """``["name=file.npy", ...]`` -> arrays (the CLI's --input)."""
    feeds = {}
    for item in items or []:
        name, sep, file = item.partition("=")
        if not sep:
            raise InputError(f"--input takes NAME=FILE.npy, got {item!r}")
        try:
            feeds[name] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise InputError(f"--input {name}: cannot read {file!r} as .npy: {exc}") from None
    return feeds
