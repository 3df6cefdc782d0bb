"""Profile a model on every device that accepts it: load time, latency distribution, throughput,
memory, per-node placement and (with ``profile=True``) the runtime's own per-op times; for a
language model also prompt and decode speed, time to first token and the decode's weight
bandwidth as a share of the DRAM bandwidth measured in the same run.

``edgesdk bench MODEL`` prints :func:`bench`'s report as a table (``--json``, ``--plot``). Each device
is loaded through the same checks as placement (:func:`edgesdk._plan.load_on`), so a device that
would refuse the model in a Session refuses it here, with the same reason.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable, Mapping, Sequence

import attrs
import numpy as np

from . import hub
from ._errors import EdgeSDKError
from ._modelfile import open_model
from ._options import SessionOptions
from ._plan import Refusal, load_on, named
from ._registry import get_registry
from ._timing import Timing, one_run, time_runs
from .backend import OpTime, Runner, missing_generative

__all__ = ["BenchReport", "DeviceBench", "LlmBench", "bench"]

#: Ops listed per device in a profile.
TOP_OPS = 10
_PROMPT = (
    "On-device inference keeps data private, works without a network and costs nothing per query. "
    "The same application must run on phones, laptops, cars and headsets, each with its own processors. "
)


@attrs.frozen
class LlmBench:
    """A language model's generation speed, medians over the runs (each from an empty KV cache)."""

    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    prompt_tok_s: float
    decode_tok_s: float
    weight_bytes: int  # bytes of weights one decoded token reads
    dram_gb_s: float | None  # DRAM read bandwidth measured in this run, with the same thread count

    @property
    def weight_gb_s(self) -> float:
        return self.decode_tok_s * self.weight_bytes / 1e9

    @property
    def dram_share(self) -> float | None:
        return self.weight_gb_s / self.dram_gb_s if self.dram_gb_s else None


@attrs.frozen
class DeviceBench:
    """One device's results; ``error`` says why it has none (refused, failed to load or to run)."""

    device: str
    backend: str
    kind: str
    name: str
    simulated: bool
    error: str | None = None
    load_s: float | None = None  # cold: compiled artifacts neither read nor stored
    load_cached_s: float | None = None  # from the backend's artifact cache (backends that keep one)
    timing: Timing | None = None
    peak_rss_bytes: int | None = None  # of this process while the device was loaded and ran
    rss_increase_bytes: int | None = None  # that peak over the process's RSS before the load
    device_memory_bytes: int | None = None  # held in the device's own memory, where the runtime says
    nodes: Mapping[str, int] = attrs.field(factory=dict)  # device id -> nodes that ran there
    op_times: tuple[OpTime, ...] | None = None
    profile_note: str | None = None  # why op_times is missing, when profiling was asked for
    llm: LlmBench | None = None

    @property
    def runs_per_s(self) -> float | None:
        return 1.0 / self.timing.mean_s if self.timing else None

    def op_type_shares(self) -> list[tuple[str, float]]:
        """Each op type's share of all ops' time, largest first."""
        by: dict[str, float] = {}
        for o in self.op_times or ():
            by[o.op_type] = by.get(o.op_type, 0.0) + o.total_s
        total = sum(by.values()) or 1.0
        return sorted(((k, v / total) for k, v in by.items()), key=lambda kv: -kv[1])

    def top_ops(self, n: int = TOP_OPS) -> list[tuple[OpTime, float]]:
        """The ``n`` ops that took longest, with their share of all ops' time."""
        ops = sorted(self.op_times or (), key=lambda o: -o.total_s)
        total = sum(o.total_s for o in ops) or 1.0
        return [(o, o.total_s / total) for o in ops[:n]]


@attrs.frozen
class BenchReport:
    model: str
    format: str
    size: int
    inputs: str  # where the inputs came from
    devices: tuple[DeviceBench, ...]
    warmup: int
    runs: int


class _RssPeak:
    """The process's peak resident memory while in the ``with`` block, sampled every 5 ms (the
    kernel's own high-water mark, ru_maxrss, never comes down between devices)."""

    def __init__(self):
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="edgesdk-bench-rss", daemon=True)

    def _sample(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _weight_bytes(model) -> int:
    """Bytes of GGUF weights one decoded token reads: every tensor but the token embedding, of which
    a token reads one row (unless the output layer is tied to it, when it is read whole)."""
    from .llm import GGUFFile

    f = GGUFFile(model.path)
    try:
        tied = "output.weight" not in f.tensors
        return sum(t.n_bytes for name, t in f.tensors.items() if name != "token_embd.weight" or tied)
    finally:
        f.close()


def _llm_bench(runner, model, options, runs: int, warmup: int, prompt_tokens: int, gen_tokens: int, on_run) -> LlmBench:
    ids = runner.tokenizer.encode(_PROMPT * (1 + prompt_tokens // 30))[:prompt_tokens]
    stats = []
    for i in range(warmup + runs):
        runner.reset()
        runner.generate(ids, max_tokens=gen_tokens, ignore_eos=True, temperature=0.0)
        if i >= warmup:
            stats.append(runner.last_stats)
        on_run()
    runner.reset()
    med = lambda xs: float(np.median(xs))  # noqa: E731
    return LlmBench(
        len(ids),
        stats[0].generated_tokens,
        med([s.ttft_s for s in stats]),
        med([s.prompt_tok_s for s in stats]),
        med([s.decode_tok_s for s in stats]),
        _weight_bytes(model),
        None,
    )


def _dram_gb_s(threads) -> float | None:
    """The DRAM read bandwidth, measured after the devices ran (its 1 GiB buffer would count in their RSS)."""
    from . import kernels

    try:
        return kernels.memory_read_gbs(threads)
    except EdgeSDKError:
        return None


def _timed_load(model, d, options, reg):
    t = time.perf_counter()
    got = load_on(model, d, options, reg)
    return got, time.perf_counter() - t


def _bench_device(model, d, reg, options, feeds, dims, runs, warmup, profile, llm_tokens, on_run) -> DeviceBench:
    base = dict(device=d.id, backend=d.backend, kind=d.kind, name=d.name, simulated=d.simulated)
    backend = reg.backend(d.backend)
    caches = backend.caches_artifacts
    with _RssPeak() as rss:
        got, load_s = _timed_load(model, d, attrs.evolve(options, artifact_cache=False) if caches else options, reg)
        if isinstance(got, Refusal):
            return DeviceBench(**base, error=got.reason)
        load_cached_s = None
        if caches:  # fill the cache, then time a load from it
            got[0].close()
            filled, _ = _timed_load(model, d, options, reg)
            if not isinstance(filled, Refusal):
                filled[0].close()
            got, load_cached_s = _timed_load(model, d, options, reg)
            if isinstance(got, Refusal):
                return DeviceBench(**base, load_s=load_s, error=f"second load failed: {got.reason}")
        runner, nodes = got
        device_memory = runner.device_memory() if hasattr(runner, "device_memory") else None
        try:
            counts: dict[str, int] = {}
            for n in nodes:
                counts[n.device_id] = counts.get(n.device_id, 0) + 1
            llm = None
            if missing_generative(runner) == ():
                llm = _llm_bench(runner, model, options, runs, warmup, *llm_tokens, on_run)
                timing = None
            else:
                timing = time_runs(one_run(runner, feeds, dims), warmup=warmup, runs=runs, on_run=on_run)
        except Exception as exc:
            return DeviceBench(**base, load_s=load_s, load_cached_s=load_cached_s, error=f"run failed: {type(exc).__name__}: {exc}")
        finally:
            runner.close()
    ops, note = None, None
    if profile:
        ops, note = _profile(model, d, reg, options, feeds, dims, runs)
    return DeviceBench(
        **base,
        load_s=load_s,
        load_cached_s=load_cached_s,
        timing=timing,
        peak_rss_bytes=rss.peak,
        rss_increase_bytes=max(0, rss.peak - rss.start),
        device_memory_bytes=device_memory,
        nodes=counts,
        op_times=ops,
        profile_note=note,
        llm=llm,
    )


def _profile(model, d, reg, options, feeds, dims, runs) -> tuple[tuple[OpTime, ...] | None, str | None]:
    """A second load with the runtime's profiler on, ``runs`` runs, and the per-op times it recorded."""
    got = load_on(model, d, attrs.evolve(options, profile=True), reg)
    if isinstance(got, Refusal):
        return None, f"profiled load refused: {got.reason}"
    runner = got[0]
    try:
        fn = one_run(runner, feeds, dims)
        for _ in range(runs):
            fn()
        ops = runner.op_times() if hasattr(runner, "op_times") else None
    except EdgeSDKError as exc:
        return None, str(exc)
    finally:
        runner.close()
    if ops is None:
        return None, getattr(runner, "op_times_note", Runner.op_times_note)
    return tuple(ops), None


def bench(
    model,
    devices: Sequence[str] | None = None,
    all_devices: bool = False,
    runs: int = 20,
    warmup: int = 1,
    feeds: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, int] | None = None,
    profile: bool = False,
    options: SessionOptions | None = None,
    prompt_tokens: int = 64,
    gen_tokens: int = 32,
    progress: Callable[[int, str], object] | None = None,
) -> BenchReport:
    """Benchmark ``model`` (a path or hub name) on ``devices`` (ids; default: every real device whose
    backend reads the model's format, with ``all_devices`` the simulated ones too).

    ``runs`` timed runs follow ``warmup`` untimed ones (the first one's time is reported as
    first-run latency). ``feeds`` gives some or all inputs; the rest are random, their symbolic
    dimensions from ``dims`` (default 1).
    A language model instead generates ``gen_tokens`` after a ``prompt_tokens`` prompt per run.
    ``progress(total, desc)`` returns an object with ``update(n)`` (a progress bar) and is used as
    a context manager.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be an int >= 1, got {runs!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup must be an int >= 1 (the first run is reported apart), got {warmup!r}")
    for name, v in (("prompt_tokens", prompt_tokens), ("gen_tokens", gen_tokens)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 2:
            raise ValueError(f"{name} must be an int >= 2, got {v!r}")
    options = options or SessionOptions()
    reg = get_registry()
    m = open_model(hub.resolve(model), reg)
    if (dims or feeds) and not options.input_shapes:
        options = attrs.evolve(options, input_shapes=_fixed_shapes(m, feeds, dims))
    chosen = _select(m, reg, devices, all_devices, options)
    total = len(chosen) * (warmup + runs)
    results = []
    with progress(total, f"bench {os.path.basename(m.path)}") if progress else _NoBar() as bar:
        for d in chosen:
            results.append(_bench_device(m, d, reg, options, feeds, dims, runs, warmup, profile, (prompt_tokens, gen_tokens), lambda: bar.update(1)))
    if any(r.llm is not None for r in results):
        dram = _dram_gb_s(options.threads)
        results = [attrs.evolve(r, llm=attrs.evolve(r.llm, dram_gb_s=dram)) if r.llm else r for r in results]
    given = sorted(feeds or ())
    sym = ", ".join(f"{k}={v}" for k, v in (dims or {}).items()) or "1"
    if m.format == "gguf":
        inputs = f"a {prompt_tokens}-token prompt, {gen_tokens} tokens generated per run"
    elif given:
        inputs = f"given: {', '.join(given)} (others random, symbolic dims {sym})"
    else:
        inputs = f"random (symbolic dims {sym})"
    return BenchReport(m.path, m.format, m.size, inputs, tuple(results), warmup, runs)


def _fixed_shapes(model, feeds, dims) -> dict[str, tuple[int, ...]]:
    """The shapes the runs will feed to the model's dynamic inputs, so backends that compile static
    graphs (QNN) build the one that runs: a given input's own shape, else the --dim values."""
    from ._feeds import concrete_shape

    out = {}
    for spec in model.info.get("inputs", ()):
        if spec.kind != "tensor" or (spec.shape is not None and all(isinstance(d, int) and d > 0 for d in spec.shape)):
            continue
        given = (feeds or {}).get(spec.name)
        out[spec.name] = tuple(np.shape(given)) if given is not None else concrete_shape(spec, dims)
    return {k: v for k, v in out.items() if v}


def _select(model, reg, ids, all_devices, options):
    if ids:
        devices = reg.devices()
        known = {d.id: d for d in devices}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise EdgeSDKError(f"no device {', '.join(unknown)}; devices here: {', '.join(known) or 'none'} (see `edgesdk devices`)")
        return [known[i] for i in ids]
    readers = [n for n in reg.backend_names if model.format in reg.backend(n).formats]  # others are not even probed
    chosen = [d for n in readers for d in reg.status(n).devices if all_devices or not d.simulated or named(d, options)]
    if not chosen:
        raise EdgeSDKError(
            f"no {'' if all_devices else 'real '}device here reads {model.format} models" + ("" if all_devices else "; --all includes simulated devices")
        )
    return chosen


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def update(self, n):
        pass
