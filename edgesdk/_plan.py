"""Placement: which backend/device runs a model, and why every other candidate did not.

Order: devices matching ``require`` (if set), ranked by the first ``prefer`` entry they match
(kind, backend name or device id), then by the backend's own score. Simulated devices (an NPU
simulator, OpenCL on the CPU) only compete when a target names them by backend or id, or
``require`` names their kind: otherwise they rank after every real device, so their timings are
never mistaken for hardware's.

``SessionOptions(select="measured")`` replaces the ranking among the candidates by a trial of each
(:mod:`edgesdk._measured`); the checks and the load are the same step (:func:`load_on`) either way.
"""

from __future__ import annotations

import logging

import attrs

from ._errors import ModelFormatError, PlacementError
from .backend import Device, Model, NodePlacement, Runner

__all__ = ["Placement", "Refusal", "load_on", "place"]

log = logging.getLogger("edgesdk.plan")


@attrs.frozen
class Refusal:
    """A candidate that was not used, and why."""

    backend: str
    device: str
    reason: str

    def __str__(self) -> str:
        return f"{self.device}: {self.reason}"


@attrs.frozen
class Placement:
    """Where a session's model runs: the device, the per-node split, and every refusal."""

    backend: str
    device: Device
    nodes: tuple[NodePlacement, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    #: "preference" (ranked), "measured" (trials run now) or "measured (cached)" (an earlier trial's result).
    selection: str = "preference"
    #: Every measured candidate's trial (:class:`edgesdk._measured.Trial`), for a measured placement.
    trials: tuple = ()
    #: Why this device won, for a measured placement.
    reason: str | None = None

    @property
    def fallback_nodes(self) -> tuple[NodePlacement, ...]:
        """Nodes that run somewhere other than the chosen device."""
        return tuple(n for n in self.nodes if n.device_id != self.device.id)

    def summary(self) -> str:
        sim = " (simulated)" if self.device.simulated else ""
        lines = [f"runs on {self.device.id} [{self.device.kind}] {self.device.name}{sim}"]
        if self.reason:
            lines.append(f"chosen by measurement: {self.reason}")
        for t in self.trials:
            lines.append(f"  {'*' if t.device == self.device.id else ' '} {t.describe()}")
        if self.nodes:
            counts: dict[str, int] = {}
            for n in self.nodes:
                counts[n.device_id] = counts.get(n.device_id, 0) + 1
            lines.append("nodes: " + ", ".join(f"{k}={v}" for k, v in counts.items()))
        for n in self.fallback_nodes:
            lines.append(f"  fallback {n.node} ({n.op_type}) -> {n.device_id}: {n.reason or 'not supported on ' + self.device.id}")
        measured = {t.device for t in self.trials}
        for r in self.refusals:
            if r.device not in measured:  # a measured candidate's numbers are listed above
                lines.append(f"  not used {r}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def _matches(target: str, d: Device) -> bool:
    return target in (d.kind, d.backend.lower(), d.id.lower())


def named(d: Device, options) -> bool:
    """A target names ``d`` itself (its backend or id, or ``require`` its kind): a simulated device competes."""
    return any(t in (d.backend.lower(), d.id.lower()) for t in options.prefer) or (options.require is not None and _matches(options.require, d))


def _rank(d: Device, options) -> tuple:
    idx = next((i for i, t in enumerate(options.prefer) if _matches(t, d)), len(options.prefer))
    return (d.simulated and not named(d, options), idx, -d.score, d.id)


def candidates(devices, options) -> tuple[list[Device], list[Refusal]]:
    """Devices to try, best first, and refusals for those ``require`` rules out."""
    refusals = []
    pool = []
    for d in devices:
        why = next((reason for target, reason in options.avoid.items() if _matches(target, d)), None)
        if why is not None:
            refusals.append(Refusal(d.backend, d.id, f"avoided: {why}"))
        elif options.require is not None and not _matches(options.require, d):
            refusals.append(Refusal(d.backend, d.id, f"is a {d.kind} device of backend {d.backend!r}; require={options.require!r}"))
        else:
            pool.append(d)
    pool.sort(key=lambda d: _rank(d, options))
    return pool, refusals


def _reads(backend) -> str:
    return ", ".join(backend.formats) or "nothing"


def load_on(model: Model, d: Device, options, registry) -> tuple[Runner, tuple[NodePlacement, ...]] | Refusal:
    """Check that device ``d`` can run ``model`` under ``options`` and load it there: the runner and
    its per-node placement, or the refusal saying why not. A corrupt file raises ModelFormatError."""
    backend = registry.backend(d.backend)
    budget = options.memory_budget_mb * 2**20 if options.memory_budget_mb else None
    if model.format not in backend.formats:
        return Refusal(d.backend, d.id, f"does not read {model.format} models (reads {_reads(backend)})")
    if budget is not None and model.size > budget:
        return Refusal(d.backend, d.id, f"model needs at least {model.size / 2**20:.1f} MiB, over the {options.memory_budget_mb} MiB budget")
    if d.memory_bytes is not None and model.size > d.memory_bytes:
        return Refusal(d.backend, d.id, f"model ({model.size} B) exceeds device memory ({d.memory_bytes} B)")
    try:
        sup = backend.check(model, d, options)
    except Exception as exc:
        log.warning("backend %s check raised: %s", d.backend, exc)
        return Refusal(d.backend, d.id, f"check raised {type(exc).__name__}: {exc}")
    if not sup.ok:
        return Refusal(d.backend, d.id, sup.reason or "refused")
    if sup.partial and options.require is not None:
        return Refusal(
            d.backend, d.id, f"can run only part of the model ({sup.reason or 'some nodes unsupported'}); require={options.require!r} forbids fallback"
        )
    try:
        runner = backend.load(model, d, options)
    except ModelFormatError:
        raise  # the file itself is corrupt: no other backend can read it either, so say so at once
    except Exception as exc:
        log.info("backend %s failed to load %s on %s: %s", d.backend, model.path, d.id, exc)
        return Refusal(d.backend, d.id, f"load failed: {type(exc).__name__}: {exc}")
    nodes = tuple(runner.nodes)
    fallback = [n for n in nodes if n.device_id != d.id]
    if fallback and options.require is not None:
        runner.close()
        detail = "; ".join(f"{n.node} ({n.op_type}) -> {n.device_id}" + (f": {n.reason}" if n.reason else "") for n in fallback)
        return Refusal(d.backend, d.id, f"{len(fallback)} node(s) would fall back: {detail}")
    if fallback:
        log.warning(
            "%d of %d nodes of %s do not run on %s: %s",
            len(fallback),
            len(nodes),
            model.path,
            d.id,
            ", ".join(f"{n.node}({n.op_type})->{n.device_id}" for n in fallback[:10]),
        )
    return runner, nodes


def place(model: Model, options, registry) -> tuple[Runner, Placement]:
    """Pick a device, load the model there, return the runner and the placement report.

    Only backends that read the model's format are probed: a probe imports its runtime (and OpenCL
    enumerates its drivers), memory and time a GGUF model on the CPU has no use for.
    """
    readers, refusals = [], []
    for name in registry.backend_names:
        backend = registry.backend(name)
        if model.format in backend.formats:
            readers.append(name)
        else:
            refusals.append(Refusal(name, name, f"does not read {model.format} models (reads {_reads(backend)})"))
    statuses = [registry.status(n) for n in readers]
    refusals += [Refusal(st.name, st.name, f"backend unavailable: {st.reason}") for st in statuses if not st.devices]
    refusals += [Refusal(st.name, st.name, f"backend refused: {st.reason}") for st in registry.refused()]
    pool, req_refusals = candidates([d for st in statuses for d in st.devices], options)
    refusals += req_refusals
    if options.select == "measured":
        from ._measured import place_measured

        runner, result = place_measured(model, pool, refusals, options, registry, lambda d: load_on(model, d, options, registry))
        if runner is not None:
            return runner, result
        refusals = result  # no trial succeeded: every candidate's refusal
    else:
        for i, d in enumerate(pool):
            got = load_on(model, d, options, registry)
            if isinstance(got, Refusal):
                refusals.append(got)
                continue
            runner, nodes = got
            refusals += [Refusal(o.backend, o.id, f"lower in preference than {d.id}") for o in pool[i + 1 :]]
            return runner, Placement(d.backend, d, nodes, tuple(refusals))
    what = f"require={options.require!r}" if options.require else f"prefer={options.prefer!r}"
    raise PlacementError(f"no backend can run {model.path} ({model.format}) with {what}", refusals)
