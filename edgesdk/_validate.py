"""Input validation against a model signature, before any backend sees the data.

Conversions (documented in the README): a numpy array whose dtype casts *safely* to the expected
one (``np.can_cast(..., "safe")``, e.g. int8 -> int32, float16 -> float32) is converted; Python
scalars and nested lists are converted when the values fit the expected dtype (int -> float is
allowed, float -> int is not); a non-contiguous array is made contiguous. Everything else is an
error that names the input, the expected dtype/shape and what was given. Arrays that already match
are passed through untouched (no copy).

ONNX sequence, optional and map inputs (see ``TensorSpec.kind``) are checked by structure: a
sequence takes a list or tuple whose elements are each checked as a tensor of the element spec
(the same conversions; rank and fixed dims only where the spec states an element shape) and goes
on as a list; an optional takes None or a value of its inner kind; a map takes a dict whose keys
are of the key dtype. Errors name the input and, inside a sequence, the element index.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from ._errors import InputDtypeError, InputError, InputNameError, InputShapeError
from .backend import TensorSpec

__all__ = ["InputValidator"]

_OBJECT = np.dtype(object)  # a dtype edgesdk cannot name (strings, bfloat16): any array goes through
# Which kinds of Python values convert to a dtype kind without loss (int -> float yes, float -> int no).
_LOSSLESS_FROM = {"b": "b", "i": "biu", "u": "bu", "f": "biuf", "c": "biufc"}


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _shape_rule(shape) -> tuple[int | None, tuple[tuple[int, int], ...]]:
    """(rank, fixed (axis, size) pairs) a declared shape imposes; rank None when none is declared."""
    if shape is None:
        return None, ()
    return len(shape), tuple((i, d) for i, d in enumerate(shape) if isinstance(d, int) and d > 0)


def _tensor(dtype, rank, fixed, declared, label, x):
    if type(x) is not np.ndarray or (x.dtype != dtype and dtype != _OBJECT) or not x.flags.c_contiguous:
        x = _coerce(label, dtype, x)
    if rank is not None:
        shape = x.shape
        if len(shape) != rank:
            _shape_error(label, x, f"rank {len(shape)}, expected rank {rank}", declared)
        for i, d in fixed:
            if shape[i] != d:
                _shape_error(label, x, f"dimension {i} is {shape[i]}, expected {d}", declared)
    return x


def _shape_error(label, x, what, declared):
    raise InputShapeError(f"{label} has shape {list(x.shape)}: {what} (model expects {_fmt_shape(declared)})")


def _coerce(label, dtype, x):
    if isinstance(x, np.ndarray):
        if x.dtype == dtype or dtype == _OBJECT:
            return np.ascontiguousarray(x)
        if np.can_cast(x.dtype, dtype, "safe"):
            return np.ascontiguousarray(x, dtype=dtype)
        raise InputDtypeError(
            f"{label} has dtype {x.dtype}, expected {dtype}; {x.dtype} -> {dtype} is not a safe cast, convert explicitly (e.g. x.astype(np.{dtype.name}))"
        )
    if x is None:
        raise InputDtypeError(f"{label} is None, but it is not optional (model expects {dtype})")
    if isinstance(x, (bool, int, float, complex, list, tuple, np.generic)):
        try:
            arr = np.asarray(x)
        except ValueError as exc:
            raise InputShapeError(f"{label} is a ragged nested list: {exc}") from None
        if arr.dtype.kind not in _LOSSLESS_FROM.get(dtype.kind, dtype.kind) and arr.size:
            raise InputDtypeError(f"{label}: values of kind {arr.dtype} cannot be converted to {dtype} without loss")
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                conv = np.asarray(x, dtype=dtype)
        except (OverflowError, ValueError) as exc:
            raise InputDtypeError(f"{label}: values do not fit {dtype}: {exc}") from None
        lost = (dtype.kind in "iu" and arr.dtype.kind in "iu" and not np.array_equal(conv, arr)) or (
            dtype.kind in "fc" and arr.dtype.kind in "fc" and bool(np.any(np.isfinite(arr) & ~np.isfinite(conv)))
        )
        if lost and arr.size:
            raise InputDtypeError(f"{label}: values do not fit {dtype}")
        return np.ascontiguousarray(conv)
    raise InputDtypeError(f"{label} must be a numpy array, got {type(x).__name__} (model expects {dtype})")


def _sequence(spec, element, label, x):
    if not isinstance(x, (list, tuple)):
        hint = "; list(x) splits an array along its first axis" if isinstance(x, np.ndarray) else ""
        raise InputDtypeError(f"{label} must be a list of arrays (model expects {spec.type_str()}), got {type(x).__name__}{hint}")
    items = [element(f"{label} element {i}", v) for i, v in enumerate(x)]
    # ONNX Runtime takes lists only; a list whose elements all passed untouched goes on as it is.
    if type(x) is list and all(a is b for a, b in zip(items, x)):
        return x
    return items


def _optional(value, label, x):
    return None if x is None else value(label, x)


def _map(spec, label, x):
    if not isinstance(x, Mapping):
        raise InputDtypeError(f"{label} must be a dict (model expects {spec.type_str()}), got {type(x).__name__}")
    key_types = (str,) if spec.key_dtype.kind in "OUS" else (int, np.integer)
    for k in x:
        if not isinstance(k, key_types) or isinstance(k, (bool, np.bool_)):
            raise InputDtypeError(f"{label} has key {k!r} of type {type(k).__name__} (model expects {spec.type_str()})")
    # Map values are scalars that the runtime converts itself, naming any mismatch; only keys decide
    # which overload of an ai.onnx.ml operator runs, so they are what must be right here.
    return x if type(x) is dict else dict(x)


def _checker(spec: TensorSpec):
    """``(label, value) -> validated value`` for ``spec``, built once per signature."""
    if spec.kind == "tensor":
        return functools.partial(_tensor, spec.dtype, *_shape_rule(spec.shape), spec.shape)
    if spec.kind == "map":
        return functools.partial(_map, spec)
    inner = _checker(spec.element)
    if spec.kind == "sequence":
        return functools.partial(_sequence, spec, inner)
    return functools.partial(_optional, inner)


class InputValidator:
    """Checks feeds against ``specs``; ``__call__`` returns the (possibly converted) feeds."""

    __slots__ = ("_specs", "_names", "_checks", "_shared_syms")

    def __init__(self, specs: tuple[TensorSpec, ...]):
        self._specs = {s.name: s for s in specs}
        self._names = frozenset(self._specs)
        self._checks = tuple((s.name, f"input {s.name!r}", _checker(s)) for s in specs)
        uses: dict[str, list[tuple[str, int]]] = {}
        for s in specs:
            # Only plain tensors: an optional may be None and a sequence's elements may differ in shape.
            if s.kind == "tensor" and s.shape is not None:
                for i, d in enumerate(s.shape):
                    if isinstance(d, str) and d not in ("?", ""):  # "?" is how some exporters spell "unknown"
                        uses.setdefault(d, []).append((s.name, i))
        # A symbol used by several inputs must take one value per call (e.g. "batch").
        self._shared_syms = tuple((sym, tuple(u)) for sym, u in uses.items() if len(u) > 1)

    def __call__(self, feeds):
        if not isinstance(feeds, Mapping):
            raise InputError(f"inputs must be a dict of name -> array, got {type(feeds).__name__}")
        if feeds.keys() != self._names:
            self._names_error(feeds)
        out = None
        for name, label, check in self._checks:
            x = feeds[name]
            y = check(label, x)
            if y is not x:
                if out is None:
                    out = dict(feeds)
                out[name] = y
        if self._shared_syms:
            self._check_symbols(out if out is not None else feeds)
        return feeds if out is None else out

    def _names_error(self, feeds):
        given = set(feeds.keys())
        unknown = sorted(map(str, given - self._names))
        missing = sorted(self._names - given)
        parts = []
        if unknown:
            parts.append(f"unknown input(s) {', '.join(map(repr, unknown))}")
        if missing:
            parts.append(f"missing input(s) {', '.join(map(repr, missing))}")
        expected = "; ".join(str(s) for s in self._specs.values())
        raise InputNameError(f"{' and '.join(parts)}; the model expects: {expected}")

    def _check_symbols(self, feeds):
        for sym, uses in self._shared_syms:
            seen = {}
            for name, axis in uses:
                seen.setdefault(feeds[name].shape[axis], []).append(f"{name}[{axis}]")
            if len(seen) > 1:
                desc = ", ".join(f"{'/'.join(v)}={k}" for k, v in seen.items())
                raise InputShapeError(f"dimension {sym!r} must have one value across inputs, got {desc}")
