"""Input validation against a model signature, before any backend sees the data.

Conversions (documented in the README): a numpy array whose dtype casts *safely* to the expected
one (``np.can_cast(..., "safe")``, e.g. int8 -> int32, float16 -> float32) is converted; Python
scalars and nested lists are converted when the values fit the expected dtype (int -> float is
allowed, float -> int is not); a non-contiguous array is made contiguous. Everything else is an
error that names the input, the expected dtype/shape and what was given. Arrays that already match
are passed through untouched (no copy).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._errors import InputDtypeError, InputError, InputNameError, InputShapeError
from .backend import TensorSpec

__all__ = ["InputValidator"]


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


class InputValidator:
    """Checks feeds against ``specs``; ``__call__`` returns the (possibly converted) feeds."""

    __slots__ = ("_specs", "_names", "_checks", "_shared_syms")

    def __init__(self, specs: tuple[TensorSpec, ...]):
        self._specs = {s.name: s for s in specs}
        self._names = frozenset(self._specs)
        checks = []
        uses: dict[str, list[tuple[str, int]]] = {}
        for s in specs:
            if s.shape is None:
                checks.append((s.name, s.dtype, None, ()))
                continue
            fixed = tuple((i, d) for i, d in enumerate(s.shape) if isinstance(d, int) and d > 0)
            for i, d in enumerate(s.shape):
                if isinstance(d, str) and d not in ("?", ""):  # "?" is how some exporters spell "unknown"
                    uses.setdefault(d, []).append((s.name, i))
            checks.append((s.name, s.dtype, len(s.shape), fixed))
        self._checks = tuple(checks)
        # A symbol used by several inputs must take one value per call (e.g. "batch").
        self._shared_syms = tuple((sym, tuple(u)) for sym, u in uses.items() if len(u) > 1)

    def __call__(self, feeds):
        if not isinstance(feeds, Mapping):
            raise InputError(f"inputs must be a dict of name -> array, got {type(feeds).__name__}")
        if feeds.keys() != self._names:
            self._names_error(feeds)
        out = None
        for name, dtype, rank, fixed in self._checks:
            x = feeds[name]
            if type(x) is not np.ndarray or (x.dtype != dtype and dtype != np.dtype(object)) or not x.flags.c_contiguous:
                x = self._coerce(name, dtype, x)
                if out is None:
                    out = dict(feeds)
                out[name] = x
            if rank is not None:
                shape = x.shape
                if len(shape) != rank:
                    self._shape_error(name, x, f"rank {len(shape)}, expected rank {rank}")
                for i, d in fixed:
                    if shape[i] != d:
                        self._shape_error(name, x, f"dimension {i} is {shape[i]}, expected {d}")
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

    def _shape_error(self, name, x, what):
        spec = self._specs[name]
        raise InputShapeError(f"input {name!r} has shape {list(x.shape)}: {what} (model expects {_fmt_shape(spec.shape)})")

    def _coerce(self, name, dtype, x):
        if isinstance(x, np.ndarray):
            if x.dtype == dtype or dtype == np.dtype(object):
                return np.ascontiguousarray(x)
            if np.can_cast(x.dtype, dtype, "safe"):
                return np.ascontiguousarray(x, dtype=dtype)
            raise InputDtypeError(
                f"input {name!r} has dtype {x.dtype}, expected {dtype}; {x.dtype} -> {dtype} is not a safe cast, "
                f"convert explicitly (e.g. x.astype(np.{dtype.name}))"
            )
        if isinstance(x, (bool, int, float, complex, list, tuple, np.generic)):
            try:
                arr = np.asarray(x)
            except ValueError as exc:
                raise InputShapeError(f"input {name!r} is a ragged nested list: {exc}") from None
            kinds_ok = {"b": "b", "i": "biu", "u": "bu", "f": "biuf", "c": "biufc"}.get(dtype.kind, dtype.kind)
            if arr.dtype.kind not in kinds_ok and arr.size:
                raise InputDtypeError(f"input {name!r}: values of kind {arr.dtype} cannot be converted to {dtype} without loss")
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    conv = np.asarray(x, dtype=dtype)
            except (OverflowError, ValueError) as exc:
                raise InputDtypeError(f"input {name!r}: values do not fit {dtype}: {exc}") from None
            lost = (dtype.kind in "iu" and arr.dtype.kind in "iu" and not np.array_equal(conv, arr)) or (
                dtype.kind in "fc" and arr.dtype.kind in "fc" and bool(np.any(np.isfinite(arr) & ~np.isfinite(conv))))
            if lost and arr.size:
                raise InputDtypeError(f"input {name!r}: values do not fit {dtype}")
            return np.ascontiguousarray(conv)
        raise InputDtypeError(f"input {name!r} must be a numpy array, got {type(x).__name__} (model expects {dtype})")

    def _check_symbols(self, feeds):
        for sym, uses in self._shared_syms:
            seen = {}
            for name, axis in uses:
                seen.setdefault(feeds[name].shape[axis], []).append(f"{name}[{axis}]")
            if len(seen) > 1:
                desc = ", ".join(f"{'/'.join(v)}={k}" for k, v in seen.items())
                raise InputShapeError(f"dimension {sym!r} must have one value across inputs, got {desc}")
