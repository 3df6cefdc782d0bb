"""``edgesdk bench MODEL``: :func:`edgesdk.bench.bench` as a table, ``--json`` or a ``--plot`` PNG."""

from __future__ import annotations

import os
import sys

import attrs

from . import _progress
from ._clijson import dump
from ._feeds import load_inputs, parse_dims

__all__ = ["add_commands", "report_dict"]


def _ms(s) -> str:
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _mb(n) -> str:
    return "-" if n is None else f"{n / 2**20:.0f}"


def _nodes(d) -> str:
    if not d.nodes:
        return "-"
    if list(d.nodes) == [d.device]:
        return f"all {d.nodes[d.device]}"
    return ", ".join(f"{k}={v}" for k, v in d.nodes.items())


def _known(rows, *optional):
    """``rows`` without the ``optional`` columns no device has a value for."""
    drop = {rows[0].index(c) for c in optional if all(r[rows[0].index(c)] == "-" for r in rows[1:])}
    return [tuple(c for i, c in enumerate(r) if i not in drop) for r in rows]


def _table(rows) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i and c[:1].isdigit() or c == "-" else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows]


def _device_label(d) -> str:
    return d.device + (" (SIMULATED)" if d.simulated else "")


def format_report(rep, cached=None) -> str:
    """The report as the terminal shows it: one table across devices, then errors, ops and notes."""
    lines = [f"{rep.model}  [{rep.format}, {rep.size / 2**20:.1f} MiB]  inputs: {rep.inputs}; {rep.warmup} warm-up + {rep.runs} timed run(s) per device"]
    ok = [d for d in rep.devices if d.error is None]
    plain = [d for d in ok if d.llm is None]
    llms = [d for d in ok if d.llm is not None]
    if plain:
        rows = [
            (
                "DEVICE",
                "KIND",
                "LOAD ms",
                "CACHED ms",
                "FIRST ms",
                "P50 ms",
                "P90 ms",
                "P99 ms",
                "MEAN ms",
                "RUNS/S",
                "PEAK RSS MiB",
                "+RSS MiB",
                "DEV MEM MiB",
                "NODES",
            )
        ]
        for d in plain:
            t = d.timing
            rows.append(
                (
                    _device_label(d),
                    d.kind,
                    _ms(d.load_s),
                    _ms(d.load_cached_s),
                    _ms(t.first_s),
                    _ms(t.median_s),
                    _ms(t.percentile_s(90)),
                    _ms(t.percentile_s(99)),
                    _ms(t.mean_s),
                    f"{d.runs_per_s:.1f}",
                    _mb(d.peak_rss_bytes),
                    _mb(d.rss_increase_bytes),
                    _mb(d.device_memory_bytes),
                    _nodes(d),
                )
            )
        lines += _table(_known(rows, "DEV MEM MiB"))
    if llms:
        first = llms[0].llm
        lines.append(f"a decoded token reads {first.weight_bytes / 1e6:.1f} MB of weights; WEIGHT GB/s = that x DECODE tok/s")
        rows = [
            (
                "DEVICE",
                "KIND",
                "LOAD ms",
                "CACHED ms",
                "TTFT ms",
                "PROMPT tok/s",
                "DECODE tok/s",
                "WEIGHT GB/s",
                "DRAM GB/s",
                "% OF DRAM",
                "PEAK RSS MiB",
                "+RSS MiB",
                "DEV MEM MiB",
            )
        ]
        for d in llms:
            q = d.llm
            share = "-" if q.dram_share is None else f"{100 * q.dram_share:.0f}%"
            rows.append(
                (
                    _device_label(d),
                    d.kind,
                    _ms(d.load_s),
                    _ms(d.load_cached_s),
                    _ms(q.ttft_s),
                    f"{q.prompt_tok_s:.1f}",
                    f"{q.decode_tok_s:.1f}",
                    f"{q.weight_gb_s:.2f}",
                    "-" if q.dram_gb_s is None else f"{q.dram_gb_s:.1f}",
                    share,
                    _mb(d.peak_rss_bytes),
                    _mb(d.rss_increase_bytes),
                    _mb(d.device_memory_bytes),
                )
            )
        lines += _table(_known(rows, "DEV MEM MiB", "CACHED ms"))
        if any(d.llm.dram_share and d.llm.dram_share > 1 for d in llms):
            lines.append("  over 100% of DRAM: the weights fit (partly) in this CPU's last-level cache")
        if any(d.kind != "cpu" for d in llms):
            lines.append("  % of DRAM compares with the host's DRAM: meaningful for devices that read their weights from it")
    for d in rep.devices:
        if d.error is not None:
            lines.append(f"{_device_label(d)}: not benchmarked: {d.error}")
    if any(d.simulated for d in ok):
        lines.append("SIMULATED devices run on this CPU: their times say nothing about the real hardware.")
    for d in ok:
        if d.op_times:
            lines.append(f"slowest ops on {d.device} (share of all op time over {rep.runs} profiled runs):")
            for o, share in d.top_ops():
                where = f" on {o.device_id}" if o.device_id and o.device_id != d.device else ""
                lines.append(f"  {100 * share:5.1f}%  {_ms(o.total_s / max(o.calls, 1)):>8} ms/call  x{o.calls:<4} {o.op_type:<18} {o.node}{where}")
            types = d.op_type_shares()
            lines.append("  by op type: " + ", ".join(f"{t} {100 * s:.1f}%" for t, s in types[:8]) + (f", {len(types) - 8} more" if len(types) > 8 else ""))
        elif d.profile_note:
            lines.append(f"no op profile on {d.device}: {d.profile_note}")
    if cached:
        lines.append(f"measured placement for this model (cached): {cached['winner']}: {cached['reason']}")
    return "\n".join(lines)


def report_dict(rep) -> dict:
    """The report for ``--json``: every field, each device's summary statistics next to its samples."""
    out = attrs.asdict(rep, recurse=False)
    devices = []
    for d in rep.devices:
        e = attrs.asdict(d, recurse=True)
        if d.timing is not None:
            t = d.timing
            e["timing"] = {
                "first_s": t.first_s,
                "median_s": t.median_s,
                "mean_s": t.mean_s,
                "p90_s": t.percentile_s(90),
                "p99_s": t.percentile_s(99),
                "runs_per_s": d.runs_per_s,
                "samples_s": list(t.samples),
                "energy_j": t.energy_j,
            }
        if d.llm is not None:
            e["llm"] = {**attrs.asdict(d.llm), "weight_gb_s": d.llm.weight_gb_s, "dram_share": d.llm.dram_share}
        if d.op_times is not None:
            e["top_ops"] = [{"node": o.node, "op_type": o.op_type, "total_s": o.total_s, "calls": o.calls, "share": share} for o, share in d.top_ops()]
            e["op_types"] = [{"op_type": t, "share": share} for t, share in d.op_type_shares()]
        devices.append(e)
    out["devices"] = devices
    return out


def _cached_decision(path):
    from ._measured import cached_decisions
    from ._modelfile import model_sha256

    sha = model_sha256(path)
    return next((e for e in cached_decisions() if e.get("key", {}).get("model_sha256") == sha), None)


def _bar(total, desc):
    # Drawn on stderr, and only when stdout is a terminal too: `edgesdk bench ... > report.txt` runs quietly.
    return _progress.bar(total, desc, unit="run", delay=0.5)


def cmd_bench(args) -> int:
    from . import hub
    from .bench import bench

    feeds = load_inputs(args.input)
    options = args.options_fn(args)
    report = bench(
        hub.resolve(args.model),
        devices=args.device,
        all_devices=args.all,
        runs=args.runs,
        warmup=args.warmup,
        feeds=feeds or None,
        dims=parse_dims(args.dim),
        profile=args.profile,
        options=options,
        prompt_tokens=args.prompt_tokens,
        gen_tokens=args.gen_tokens,
        progress=_bar if sys.stdout.isatty() else None,
    )
    if args.plot:
        from ._bench_plot import plot

        plot(report, args.plot)
    if args.json:
        dump(report_dict(report))
    else:
        print(format_report(report, _cached_decision(report.model)))
        if args.plot:
            print(f"plot: {os.path.abspath(args.plot)}")
    return 0 if any(d.error is None for d in report.devices) else 1


def add_commands(sub, add_placement_args, options_fn) -> None:
    p = sub.add_parser("bench", help="profile a model on every device: load, latency percentiles, memory, per-op time")
    p.add_argument("model", help="model file or hub name")
    p.add_argument("--device", action="append", metavar="ID", help="benchmark only this device (repeatable; see `edgesdk devices`)")
    p.add_argument("--all", action="store_true", help="include simulated devices (an NPU simulator, OpenCL on the CPU)")
    p.add_argument("--runs", type=int, default=20, metavar="N", help="timed runs per device (default 20; for an LLM, generations)")
    p.add_argument("--warmup", type=int, default=1, metavar="N", help="untimed runs first (default 1; the first is reported)")
    p.add_argument("--input", "-i", action="append", metavar="NAME=FILE.npy", help="an input from a .npy file (others random)")
    p.add_argument("--random", action="store_true", help="random inputs for all not given (the default)")
    p.add_argument("--dim", action="append", metavar="SYMBOL=N", help="value of a symbolic dimension of random inputs (default 1)")
    p.add_argument("--profile", action="store_true", help="also the runtime's per-op times: the 10 slowest ops and their share")
    p.add_argument("--prompt-tokens", type=int, default=64, metavar="N", help="LLM: prompt length (default 64)")
    p.add_argument("--gen-tokens", type=int, default=32, metavar="N", help="LLM: tokens generated per run (default 32)")
    p.add_argument("--json", action="store_true", help="machine-readable report, every sample included")
    p.add_argument("--plot", metavar="OUT.png", help="latency distribution per device (and the op breakdown) as a PNG")
    add_placement_args(p)
    p.set_defaults(fn=cmd_bench, options_fn=options_fn)
