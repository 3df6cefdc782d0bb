"""Progress bars for work that can take more than a second or two (hub assembly and hashing, GGUF
quantization, perplexity), drawn by tqdm on stderr so stdout stays exactly the command's output.

A bar is hidden when stderr is not a terminal (tqdm's ``disable=None``: logs and pipes stay clean),
after :func:`set_enabled` ``(False)`` (the CLI's ``-q``), and for work that ends within ``delay``
seconds (so quick calls never flash a bar).
"""

from __future__ import annotations

import sys

__all__ = ["bar", "set_enabled"]

_enabled = True


def set_enabled(on: bool) -> None:
    """Show (the default, on a terminal) or hide every progress bar of this process."""
    global _enabled
    _enabled = bool(on)


def bar(total: int | None, desc: str, unit: str = "it", delay: float = 1.0):
    """A tqdm bar to use as a context manager and ``update(n)``; ``unit="B"`` counts bytes as KiB/MiB/GiB."""
    from tqdm import tqdm

    scaled = {"unit_scale": True, "unit_divisor": 1024} if unit == "B" else {}
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, delay=delay, disable=None if _enabled else True, dynamic_ncols=True, **scaled)
