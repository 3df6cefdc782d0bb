"""Measured placement (``SessionOptions(select="measured")``): trial every candidate device, keep the
fastest (or the most frugal, with ``objective="energy"``), remember the decision.

The decision is stored in the ``placement`` cache folder, one JSON entry per key. The key covers all
that can change the answer: the model's sha256, every candidate (device id, name, backend and its
version, the device's details such as its driver version), edgesdk's version and the options that change how a model runs (threads, precision,
backend options, context length, KV type) or what is minimised. Any change is a new key, so a stale
decision is never read; an entry that does not parse or does not match its key is deleted and
measured again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path

import attrs

from . import _cache
from ._io import cache_dir
from ._modelfile import model_sha256
from ._timing import energy_meter, one_run, time_runs

__all__ = ["Trial", "TIE", "place_measured", "cached_decisions"]

log = logging.getLogger("edgesdk.plan")

CACHE = "placement"
SCHEMA = 1
#: Measured medians within this fraction of the fastest are a tie, which the preference order breaks:
#: a few percent is what two runs of the same device differ by on a busy host.
TIE = 0.05
_TRIAL_RUNS = 10


@attrs.frozen
class Trial:
    """One candidate's trial: timed runs, their median and 90th percentile, the first run (which
    includes one-time work: allocation, compilation), joules per run when a counter was readable,
    or the error that disqualified it."""

    backend: str
    device: str
    runs: int = 0
    median_s: float | None = None
    p90_s: float | None = None
    first_s: float | None = None
    energy_j: float | None = None
    error: str | None = None
    simulated: bool = False

    def describe(self) -> str:
        name = self.device + (" (simulated)" if self.simulated else "")
        if self.error:
            return f"{name}: trial failed: {self.error}"
        energy = f", {self.energy_j:.3g} J/run" if self.energy_j is not None else ""
        return f"{name}: median {self.median_s * 1e3:.3f} ms, p90 {self.p90_s * 1e3:.3f} ms over {self.runs} runs{energy}"


def _key(model, pool, options, registry) -> tuple[str, dict]:
    from . import __version__

    material = {
        "schema": SCHEMA,
        "edgesdk": __version__,
        "model_sha256": model_sha256(model.path),
        # The device's details carry its driver version (OpenCL) where the backend knows it.
        "candidates": sorted([d.id, d.name, d.backend, registry.backend(d.backend).version or "", sorted(d.details.items())] for d in pool),
        "options": {
            "threads": options.threads,
            "precision": options.precision,
            "n_ctx": options.n_ctx,
            "kv_dtype": options.kv_dtype,
            "objective": options.objective,
            "backend_options": options.backend_options,
        },
    }
    blob = json.dumps(material, sort_keys=True, default=repr)
    # Compared with what a cache entry holds after a JSON round trip (tuples come back as lists).
    return hashlib.sha256(blob.encode()).hexdigest()[:32], json.loads(blob)


def _entry_path(key: str) -> Path:
    return cache_dir(CACHE) / f"{key}.json"


def _read(key: str, material: dict) -> dict | None:
    """The stored decision for ``key``; None when there is none or it is unusable (then it is deleted)."""
    path = _entry_path(key)
    try:
        seen = os.stat(path)
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry.get("key") != material or not isinstance(entry.get("winner"), str):
            raise ValueError("it was written for another key")
        trials = tuple(Trial(**t) for t in entry["trials"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.warning("placement cache: %s is unusable (%s: %s); measuring again", path, type(exc).__name__, exc)
        _cache.discard(path, expect=seen if "seen" in locals() else None)
        return None
    _cache.touch(path)
    return {**entry, "trials": trials}


def _write(key: str, material: dict, model, winner: str, reason: str, trials) -> None:
    path = _entry_path(key)
    entry = {
        "key": material,
        "model": os.path.basename(model.path),
        "measured_at": time.time(),
        "winner": winner,
        "reason": reason,
        "trials": [attrs.asdict(t) for t in trials],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _cache.writing(path) as f:
            f.write(json.dumps(entry, indent=1).encode())
        _cache.EntryStore(path.parent).committed(path)
    except OSError as exc:  # the decision stands for this session; the next one measures again
        log.warning("placement cache: cannot store %s: %s", path, exc)


def cached_decisions() -> list[dict]:
    """Every stored decision (model file name, winner, reason, trials, when), newest first."""
    out = []
    for p in cache_dir(CACHE).glob("*.json"):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda e: -float(e.get("measured_at", 0)))


def _choose(trials: list[Trial], order: list[str], objective: str, meter_note: str | None) -> tuple[str, str]:
    """The winning device id and why: the best by the objective, unless a device earlier in the
    preference order is within TIE of it."""
    ok = [t for t in trials if t.error is None]
    by_energy = objective == "energy" and all(t.energy_j is not None for t in ok)
    metric = (lambda t: t.energy_j) if by_energy else (lambda t: t.median_s)
    what, unit, scale = ("energy per run", "J", 1.0) if by_energy else ("median run time", "ms", 1e3)
    best = min(ok, key=metric)
    winner = next(t for t in sorted(ok, key=lambda t: order.index(t.device)) if metric(t) <= metric(best) * (1 + TIE))
    others = [t for t in ok if t is not winner]
    if not others:
        reason = f"the only candidate whose trial succeeded ({what} {metric(winner) * scale:.3g} {unit})"
    elif winner is best:
        runner_up = min(others, key=metric)
        reason = (
            f"lowest {what}: {metric(winner) * scale:.3g} {unit} vs {metric(runner_up) * scale:.3g} {unit} on "
            f"{runner_up.device} ({metric(runner_up) / metric(winner):.2f}x)"
        )
    else:
        reason = (
            f"within {TIE:.0%} of the lowest {what} ({metric(winner) * scale:.3g} vs {metric(best) * scale:.3g} {unit} "
            f"on {best.device}) and earlier in the preference order"
        )
    if objective == "energy" and not by_energy:
        reason += f"; chosen by latency, as no energy counter is readable ({meter_note})"
    return winner.device, reason


def place_measured(model, pool, refusals, options, registry, load_on):
    """Measure the candidates in ``pool`` (best-preferred first) and return (runner, Placement).

    ``load_on(device) -> (runner, nodes) | Refusal`` is the plan's own check-and-load step, so a
    measured placement refuses exactly what a preferred one would; ``pool`` holds only devices
    whose backend reads the model's format.
    """
    from ._plan import Placement, Refusal, named

    refusals, fmt = list(refusals), list(pool)  # the plan's pool holds only devices whose backend reads the model
    real = [d for d in fmt if not d.simulated or named(d, options)]
    if real:  # simulated devices compete only when named, or when they are all there is
        refusals += [Refusal(d.backend, d.id, "simulated: not measured unless a target names it (prefer/require)") for d in fmt if d not in real]
        fmt = real
    key, material = _key(model, fmt, options, registry)
    cached = _read(key, material)
    if cached is not None:
        dev = next((d for d in fmt if d.id == cached["winner"]), None)
        got = load_on(dev) if dev is not None else None
        if got is not None and not isinstance(got, Refusal):
            runner, nodes = got
            losers = [Refusal(t.backend, t.device, t.describe()) for t in cached["trials"] if t.device != dev.id]
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(cached["measured_at"]))
            return runner, Placement(
                dev.backend,
                dev,
                nodes,
                tuple(refusals + losers),
                selection="measured (cached)",
                trials=cached["trials"],
                reason=f"{cached['reason']} (measured {when}, read from the placement cache)",
            )
        log.info("placement cache: the cached winner %s no longer loads (%s); measuring again", cached["winner"], got)
        _cache.discard(_entry_path(key))
    meter, meter_note = energy_meter() if options.objective == "energy" else (None, None)
    trials, best = [], None  # best: (runner, device, nodes) of the winner so far; at most two models are loaded at once
    order = [d.id for d in fmt]
    for d in fmt:
        got = load_on(d)
        if isinstance(got, Refusal):
            refusals.append(got)
            continue
        runner, nodes = got
        try:
            timing = time_runs(one_run(runner), warmup=1, runs=_TRIAL_RUNS, budget_s=options.trial_s, meter=meter)
            trial = Trial(
                d.backend, d.id, len(timing.samples), timing.median_s, timing.percentile_s(90), timing.first_s, timing.energy_j, simulated=d.simulated
            )
        except Exception as exc:  # a device that cannot run the model is refused, not fatal
            trial = Trial(d.backend, d.id, error=f"{type(exc).__name__}: {exc}", simulated=d.simulated)
        trials.append(trial)
        ok = [t for t in trials if t.error is None]
        if trial.error is None and _choose(ok, order, options.objective, meter_note)[0] == d.id:
            if best is not None:
                best[0].close()
            best = (runner, d, nodes)
        else:
            runner.close()
    for t in trials:
        if t.error is not None:
            refusals.append(Refusal(t.backend, t.device, f"trial failed: {t.error}"))
    if best is None:
        return None, refusals
    winner, reason = _choose(trials, order, options.objective, meter_note)
    if best[1].id != winner:  # a later trial made an earlier, closed candidate the winner (a tie broken by preference)
        got = load_on(next(d for d in fmt if d.id == winner))
        if isinstance(got, Refusal):
            winner, reason = best[1].id, f"{reason}; but {winner} failed to load again ({got.reason}), so the next best runs"
        else:
            best[0].close()
            best = (got[0], next(d for d in fmt if d.id == winner), got[1])
    runner, dev, nodes = best
    refusals += [Refusal(t.backend, t.device, t.describe()) for t in trials if t.error is None and t.device != winner]
    _write(key, material, model, winner, reason, trials)
    return runner, Placement(dev.backend, dev, nodes, tuple(refusals), selection="measured", trials=tuple(trials), reason=reason)
