"""Helpers the command modules share, the core's and plugins' alike (``edgesdk_cli_commands``)."""

from __future__ import annotations

import json

import attrs

from ._clijson import dump
from ._errors import InputError

__all__ = ["backend_options_json", "options_with_backend_json", "print_report"]

_EXAMPLE = '\'{"qnn": {"input_shapes": {"x": [1, 3, 48, 192]}}}\''


def print_report(report, as_json: bool) -> None:
    """A frozen attrs report on stdout: its ``summary()``, or every field as JSON."""
    if as_json:
        dump(attrs.asdict(report))
    else:
        print(report.summary())


def backend_options_json(text: str | None) -> dict:
    """``--backend-options JSON``: {backend name: {option: value}}; empty when not given."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InputError(f"--backend-options must be JSON such as {_EXAMPLE}: {exc}") from None
    if not isinstance(value, dict):
        raise InputError("--backend-options must be a JSON object: {backend name: {option: value}}")
    return value


def options_with_backend_json(args, options_fn):
    """``options_fn(args)`` with the command's ``--backend-options`` JSON as its backend options."""
    return attrs.evolve(options_fn(args), backend_options=backend_options_json(getattr(args, "backend_options", None)))
