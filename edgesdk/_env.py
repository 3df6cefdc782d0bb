"""Every environment variable edgesdk reads, in one table, with typed parsing and clear errors.

Code reads a variable through :func:`get` (never ``os.environ`` directly), so the table in
:data:`VARIABLES` is the complete list, and a bad value always gets the same kind of message:
the variable's name, the value given and what was expected. Values are read on every call:
tests and long-running apps may change the environment between calls.

A bad value is a warning (logged on ``edgesdk.env``, then the default applies) for variables
that tune performance or pick an implementation: a typo there must not make ``import edgesdk``
or a model load fail. It is an error (:class:`EnvError`, or the caller's subclass of it) where
guessing would do harm, such as a cache size bound.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import attrs

from ._errors import EdgeSDKError

__all__ = ["EnvError", "EnvVar", "VARIABLES", "get", "markdown_table"]

log = logging.getLogger("edgesdk.env")


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


_AS_DEFAULT = object()  # EnvVar.invalid's default: a bad value stands for the default


class EnvError(EdgeSDKError, ValueError):
    """An environment variable holds a value edgesdk cannot use (the message names variable, value and what is expected)."""


def _flag(var: EnvVar, text: str) -> bool:
    key = text.lower()
    if key not in _TRUE and key not in _FALSE:
        raise ValueError(text)
    return key in _TRUE


def _choice(var: EnvVar, text: str) -> str:
    key = text.lower()
    for old, new in var.aliases:
        if key == old:
            log.warning("%s=%r is deprecated; use %s=%s", var.name, text, var.name, new)
            return new
    if key not in var.choices:
        raise ValueError(text)
    return key


def _int(var: EnvVar, text: str) -> int:
    lo, hi = var.bounds
    n = int(text)
    n = n if lo is None else max(n, lo)
    return n if hi is None else min(n, hi)


def _size(var: EnvVar, text: str) -> float:
    mb = float(text)
    if not math.isfinite(mb) or mb < 0:
        raise ValueError(text)
    return mb


#: kind -> parser of a non-blank text; each raises ValueError for a value it cannot use.
_PARSERS = {
    "str": lambda var, text: text,
    "path": lambda var, text: text,
    "list": lambda var, text: tuple(x.strip() for x in text.split(",") if x.strip()),
    "flag": _flag,
    "choice": _choice,
    "int": _int,
    "size": _size,
}


@attrs.frozen
class EnvVar:
    """One environment variable: how its text is parsed and what happens when it cannot be.

    ``kind`` is ``str``/``path`` (the text; blank means unset), ``list``
    (comma-separated names), ``flag`` (1/0, true/false, yes/no, on/off), ``choice`` (one of
    ``choices``, case-insensitive, or one of the deprecated ``aliases``), ``int`` (clamped to ``bounds``), ``size`` (a finite number
    >= 0). ``invalid`` is what a bad value of a warning-level variable stands for (default:
    ``default``); ``strict`` makes a bad value an :class:`EnvError` instead.
    """

    name: str
    kind: str = attrs.field(validator=attrs.validators.in_(_PARSERS))
    default: Any
    meaning: str
    choices: tuple[str, ...] = ()
    bounds: tuple[int | None, int | None] = (None, None)
    expected: str = ""  # what a valid value looks like, when the kind alone does not say it
    aliases: tuple[tuple[str, str], ...] = ()  # (deprecated name, the choice it stands for)
    strict: bool = False
    invalid: Any = _AS_DEFAULT

    def describe_expected(self) -> str:
        if self.expected:
            return self.expected
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "flag":
            return "a flag (1/0, true/false, yes/no or on/off)"
        return {"int": "an integer", "size": "a number >= 0"}.get(self.kind, "a value")


def _vars(*rows: EnvVar) -> dict[str, EnvVar]:
    return {r.name: r for r in rows}


VARIABLES: dict[str, EnvVar] = _vars(
    EnvVar("EDGESDK_CACHE_DIR", "path", None, "Root of edgesdk's caches (hub downloads, compiled artifacts); default `$XDG_CACHE_HOME/edgesdk`."),
    EnvVar("XDG_CACHE_HOME", "path", None, "Used for the cache root when `EDGESDK_CACHE_DIR` is unset; default `~/.cache`."),
    EnvVar(
        "EDGESDK_CACHE_MAX_MB",
        "size",
        2048,
        "Size bound of each cache folder in MiB, least recently used entries evicted first; 0: no bound.",
        expected="a size in MiB: give a number >= 0 (default 2048; 0 means no bound)",
        strict=True,
    ),
    EnvVar(
        "EDGESDK_KERNELS",
        "choice",
        "auto",
        "Quantized-matmul implementation: `c` (cffi C kernels; an error when not built), `numpy` (reference), "
        "`auto` (C when built). `kernels` is a deprecated alias of `c`.",
        choices=("auto", "c", "numpy"),
        aliases=(("kernels", "c"),),
    ),
    EnvVar(
        "EDGESDK_SIMD",
        "str",
        None,
        "SIMD path of the C kernels (`amx`, `avx512vnni`, `avxvnni`, `avx2`, `neon`, `portable`, `auto`); "
        "one this CPU cannot run is refused with a warning. Default: the best runnable one.",
    ),
    EnvVar(
        "EDGESDK_DECODE_READ",
        "choice",
        "auto",
        "How decode-sized matmuls read weights on x86: `paired` (two row groups per AVX-512 tile, far and near "
        "prefetch), `single` (one group, far prefetch only), `auto` (single on AMD and Hygon CPUs, else paired). Same results.",
        choices=("auto", "paired", "single"),
    ),
    EnvVar("EDGESDK_THREADS", "int", None, "Initial size of the C kernels' thread pool; default: the CPUs this process may use.", bounds=(1, None)),
    EnvVar(
        "EDGESDK_LLM_DECODE_THREADS",
        "int",
        None,
        "Threads for the layer matmuls of LLM decode steps (<= 16 tokens), 0-256; default: measured at load.",
        bounds=(0, 256),
    ),
    EnvVar(
        "EDGESDK_LLM_FUSED",
        "flag",
        True,
        "Off (`0`, `false`, `off`) runs the LLM's layers one kernel call at a time instead of the fused C forward pass (debugging).",
    ),
    EnvVar("EDGESDK_RESAMPLER", "choice", "auto", "Audio resampler: `soxr`, `numpy` or `auto` (soxr when installed).", choices=("auto", "soxr", "numpy")),
    EnvVar("EDGESDK_PLUGINS", "list", (), "Comma-separated plugins to load explicitly (entry-point names or module paths)."),
    EnvVar("EDGESDK_BLOCK_PLUGINS", "list", (), "Comma-separated plugins (entry-point or backend names) never loaded."),
    # pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD treats any other text as "set": so does this one
    EnvVar("EDGESDK_DISABLE_PLUGIN_AUTOLOAD", "flag", False, "Load no entry-point plugins except those named in `EDGESDK_PLUGINS`.", invalid=True),
    EnvVar("EDGESDK_SERVE_API_KEY", "str", None, "API key `edgesdk serve` requires from clients (`--api-key` overrides it)."),
)


def get(name: str, error: type[EnvError] = EnvError) -> Any:
    """The value of variable ``name`` (which must be in :data:`VARIABLES`), parsed by its kind.

    Unset or blank: the table's default. A value that does not parse raises ``error`` for a
    strict variable, else logs a warning naming variable, value and what was expected, and
    gives the table's ``invalid`` value (the default unless stated).
    """
    var = VARIABLES[name]
    text = os.environ.get(name, "").strip()
    if not text:
        return var.default
    try:
        return _PARSERS[var.kind](var, text)
    except ValueError:
        message = f"{name}={text!r} is not {var.describe_expected()}"
        if var.strict:
            raise error(message) from None
        fallback = var.default if var.invalid is _AS_DEFAULT else var.invalid
        log.warning("%s; using %s", message, "the default" if fallback is None else repr(fallback))
        return fallback


def markdown_table() -> str:
    """The README's table of environment variables: name, type, default, meaning."""
    rows = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    for v in VARIABLES.values():
        kind = f"{v.kind}: {' / '.join(v.choices)}" if v.choices else v.kind
        default = "unset" if v.default in (None, ()) else str(v.default).lower() if v.kind == "flag" else str(v.default)
        rows.append(f"| `{v.name}` | {kind} | {default} | {v.meaning} |")
    return "\n".join(rows)
