"""Timing a model's runs: the one loop that measured placement's trials and ``edgesdk bench`` share,
the work one run is (a generative model's forward pass, or an inference on given or random
inputs), and the host's energy counter (Linux RAPL) for energy per run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import attrs
import numpy as np

from ._errors import EdgeSDKError
from .backend import missing_generative

__all__ = ["EnergyMeter", "EnergyUnavailable", "Timing", "energy_meter", "one_run", "time_runs"]

log = logging.getLogger("edgesdk.timing")

#: Where Linux exposes RAPL energy counters; a module attribute so tests can point it at a fake tree.
POWERCAP = Path("/sys/class/powercap")

# The prompt a generative model's timed forward pass reads: a few ordinary tokens, so one run costs
# what generating one token after a short prompt costs (every weight read once).
_PROBE_TEXT = "The quick brown fox jumps over the lazy dog."


class EnergyUnavailable(EdgeSDKError):
    """This host exposes no readable energy counter."""


class EnergyMeter:
    """Sum of the package-level RAPL counters (``intel-rapl:N/energy_uj``; AMD's Zen exposes the same
    tree), in joules, with wrap-around of each counter handled between two reads. Sub-zones (core,
    uncore, dram: ``intel-rapl:N:M``) are inside their package's count and are not added again.

    It measures the whole package, idle cores and other processes included, so compare the energy of
    runs measured the same way on the same host, not against a datasheet.
    """

    def __init__(self, root: Path | None = None):
        root = POWERCAP if root is None else Path(root)
        zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1) if root.is_dir() else []
        if not zones:
            raise EnergyUnavailable(f"no RAPL package counters under {root} (not Linux, no intel_rapl/amd driver, or a VM)")
        self._zones = []
        for z in zones:
            try:
                wrap = int((z / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                wrap = 0
            try:
                start = int((z / "energy_uj").read_text())
            except PermissionError:
                raise EnergyUnavailable(f"{z / 'energy_uj'} is not readable by this user (root only since Linux 5.10)") from None
            except (OSError, ValueError) as exc:
                raise EnergyUnavailable(f"cannot read {z / 'energy_uj'}: {exc}") from None
            self._zones.append([z / "energy_uj", wrap, start, 0])  # path, wrap, last reading, joules*1e6 so far
        self.zones = tuple(str(z) for z in zones)

    def joules(self) -> float:
        """Energy used since the meter was made."""
        total = 0
        for zone in self._zones:
            path, wrap, last, acc = zone
            now = int(path.read_text())
            step = now - last
            if step < 0:  # the counter wrapped (or was reset): count up to the wrap, then from zero
                step += wrap if wrap else 0
            zone[2], zone[3] = now, acc + max(step, 0)
            total += zone[3]
        return total / 1e6


def energy_meter() -> tuple[EnergyMeter | None, str | None]:
    """A meter, or None and why there is none."""
    try:
        return EnergyMeter(), None
    except EnergyUnavailable as exc:
        return None, str(exc)


@attrs.frozen
class Timing:
    """Seconds of a first (warm-up) run and of each timed run after it, and joules per timed run."""

    first_s: float
    samples: tuple[float, ...]
    energy_j: float | None = None

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples))

    @property
    def mean_s(self) -> float:
        return float(np.mean(self.samples))

    def percentile_s(self, q: float) -> float:
        return float(np.percentile(self.samples, q))


def time_runs(
    fn: Callable[[], object],
    warmup: int = 1,
    runs: int = 10,
    budget_s: float | None = None,
    meter: EnergyMeter | None = None,
    on_run: Callable[[], None] | None = None,
) -> Timing:
    """Call ``fn`` ``warmup`` times (the first one's time is kept: first-run latency), then up to ``runs``
    timed times, stopping early once ``budget_s`` seconds of timed runs have passed (at least one
    timed run always happens). ``on_run`` is called after every call (a progress bar)."""
    if warmup < 1 or runs < 1:
        raise ValueError(f"warmup and runs must be >= 1, got warmup={warmup} runs={runs}")
    first = None
    for _ in range(warmup):
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t if first is None else first
        if on_run:
            on_run()
    samples = []
    e0 = meter.joules() if meter else None
    start = time.perf_counter()
    while len(samples) < runs and (not samples or budget_s is None or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
        if on_run:
            on_run()
    energy = (meter.joules() - e0) / len(samples) if meter else None
    return Timing(first, tuple(samples), energy)


def one_run(runner, feeds=None, dims=None) -> Callable[[], object]:
    """The unit of work timed on ``runner``: for a generative model, one forward pass over a short
    prompt (what a generated token costs: every weight is read once); otherwise ``runner.run`` on
    ``feeds`` (validated here), completed with random inputs whose symbolic dimensions take their
    value from ``dims`` (default 1)."""
    from ._feeds import random_feeds
    from ._validate import InputValidator

    if missing_generative(runner) == ():
        ids = np.asarray([runner.tokenizer.encode(_PROBE_TEXT)[:8]], np.int64)
        if ids.size == 0:
            raise EdgeSDKError("the tokenizer encodes the probe prompt to no tokens")
        feeds = {"input_ids": ids}
    else:
        feeds = InputValidator(runner.inputs)(random_feeds(runner.inputs, seed=0, dims=dims, given=feeds))
    return lambda: runner.run(feeds)
