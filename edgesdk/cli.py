"""``edgesdk`` command line: devices, info, run, hub (and the LLM commands, serve)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import attrs
import numpy as np

from . import __version__, _cache, _progress, hub
from ._clijson import dump, placement_dict
from ._errors import EdgeSDKError
from ._feeds import load_inputs, parse_dims, random_feeds
from ._options import SELECTIONS

__all__ = ["main"]


def _fmt_bytes(n) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _options(args):
    from ._options import SessionOptions

    kw = {}
    if args.prefer:
        kw["prefer"] = tuple(args.prefer)
    if args.require:
        kw["require"] = args.require
    if args.threads:
        kw["threads"] = args.threads
    if getattr(args, "select", None):
        kw["select"] = args.select
    if getattr(args, "device_class", None):
        return SessionOptions.for_device(args.device_class, **kw)
    return SessionOptions(**kw)


def _add_placement_args(p):
    p.add_argument("--prefer", action="append", metavar="TARGET", help="device kind, backend or device id, best first (repeatable)")
    p.add_argument("--require", metavar="TARGET", help="the whole model must run on this kind/backend/device")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads")
    p.add_argument("--device-class", choices=["phone", "pc", "car", "xr", "iot"], help="start from a device-class preset")
    p.add_argument(
        "--select", choices=SELECTIONS, help="how to choose among the devices: preference order (default) or measured (a short trial of each, cached)"
    )


def _kernels_info():
    """(one line for the table, a dict for --json): which SIMD path runs, what was asked, what could."""
    try:
        from . import kernels
    except Exception as exc:  # the SDK still runs models without them
        line = f"kernels: unavailable ({type(exc).__name__}: {exc})"
        return line, {"impl": "unavailable", "reason": line.removeprefix("kernels: ")}
    i = kernels.info()
    return i.describe(), attrs.asdict(i)


def _cache_line(r) -> str:
    """One compiled-artifact cache folder: entries, size and bound (EDGESDK_CACHE_MAX_MB)."""
    bound = _fmt_bytes(r.max_bytes) if r.max_bytes is not None else "none"
    return f"cache {r.name:<9} {r.entries:>3} entries {_fmt_bytes(r.size_bytes):>10}  bound {bound:<9} {r.folder}"


_SHOWN_DECISIONS = 5


def cmd_devices(args) -> int:
    from ._measured import cached_decisions
    from ._registry import get_registry

    reg = get_registry()
    statuses = reg.statuses()
    caches = _cache.reports()  # first: a bad EDGESDK_CACHE_MAX_MB is an error, not half a report
    decisions = cached_decisions()
    if args.json:
        out = {
            "backends": [
                {
                    "name": st.name,
                    "version": st.version,
                    "plugin": st.plugin,
                    "available": st.available,
                    "reason": st.reason,
                    "notes": list(getattr(reg._backends.get(st.name, (None,))[0], "notes", []) or []),
                    "devices": [
                        {
                            "id": d.id,
                            "kind": d.kind,
                            "name": d.name,
                            "memory_bytes": d.memory_bytes,
                            "simulated": d.simulated,
                            "score": d.score,
                            "capabilities": sorted(d.capabilities),
                            "details": dict(d.details),
                        }
                        for d in st.devices
                    ],
                }
                for st in statuses
            ],
            "plugins": [{"name": p.name, "source": p.source, "loaded": p.loaded, "error": p.error} for p in reg.plugins],
            "kernels": _kernels_info()[1],
            "caches": [attrs.asdict(r) for r in caches],
            "placements": decisions,
        }
        print(json.dumps(out, indent=2))
        return 0
    for st in statuses:
        head = f"{st.name} {st.version}".strip()
        if not st.devices:
            print(f"{head}: no devices - {st.reason}")
        else:
            print(f"{head}:")
        for d in st.devices:
            sim = "  (SIMULATED: timings are not those of real hardware)" if d.simulated else ""
            print(f"  {d.id:<24} {d.kind:<4} {d.name}  mem={_fmt_bytes(d.memory_bytes)}{sim}")
        backend = reg._backends.get(st.name, (None,))[0]
        for note in getattr(backend, "notes", []) or []:
            print(f"    note: {note}")
    for p in reg.plugins:
        if not p.loaded:
            print(f"plugin {p.name} ({p.source}) skipped: {p.error}")
    print(_kernels_info()[0])
    for r in caches:
        print(_cache_line(r))
    for e in decisions[:_SHOWN_DECISIONS]:
        print(f"  placement of {e.get('model', '?')}: {e.get('winner', '?')} ({e.get('reason', '')})")
    if len(decisions) > _SHOWN_DECISIONS:
        print(f"  ... {len(decisions) - _SHOWN_DECISIONS} older measured placements (`edgesdk devices --json` lists all)")
    return 0


def cmd_info(args) -> int:
    from ._modelfile import open_model
    from ._options import SessionOptions
    from ._registry import get_registry

    reg = get_registry()
    model = open_model(hub.resolve(args.model), reg)
    opts = SessionOptions()
    accepts = []
    for d in reg.devices():
        backend = reg.backend(d.backend)
        if model.format not in backend.formats:
            verdict = f"no: reads {', '.join(backend.formats)}"
        else:
            try:
                sup = backend.check(model, d, opts)
                verdict = "yes" + (" (partial)" if sup.partial else "") if sup.ok else f"no: {sup.reason}"
            except Exception as exc:
                verdict = f"no: check raised {type(exc).__name__}: {exc}"
        accepts.append((d.id, verdict))
    info = dict(model.info)
    if args.json:
        out = {
            "path": model.path,
            "format": model.format,
            "size": model.size,
            "inputs": [str(s) for s in info.pop("inputs", ())],
            "outputs": [str(s) for s in info.pop("outputs", ())],
            "info": info,
            "backends": dict(accepts),
        }
        print(json.dumps(out, indent=2, default=str))
        return 0
    print(f"{model.path}\n  format: {model.format}  size: {_fmt_bytes(model.size)}")
    for key in ("inputs", "outputs"):
        for s in info.pop(key, ()):
            print(f"  {key[:-1]:<6} {s}")
    for k, v in info.items():
        if isinstance(v, (list, tuple)) and len(v) > 12:
            v = ", ".join(map(str, v[:12])) + f", ... ({len(v)} total)"
        print(f"  {k}: {v}")
    print("  backends:")
    for did, verdict in accepts:
        print(f"    {did:<24} {verdict}")
    return 0


def cmd_run(args) -> int:
    from ._io import atomic_save_npy
    from ._session import Session

    feeds = load_inputs(args.input)
    with Session(hub.resolve(args.model), _options(args)) as s:
        if args.random:
            feeds = random_feeds(s.inputs, seed=args.seed, dims=parse_dims(args.dim), given=feeds)
        s.run(feeds)  # warm-up and validation
        times = []
        for _ in range(max(1, args.repeat)):
            t0 = time.perf_counter()
            out = s.run(feeds)
            times.append(time.perf_counter() - t0)
        if args.json:
            dump(
                {
                    "placement": placement_dict(s.placement),
                    "median_ms": 1e3 * float(np.median(times)),
                    "runs": len(times),
                    "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in out.items()},
                }
            )
        else:
            print(s.placement)
            for k, v in out.items():
                stats = f" min={v.min():.4g} max={v.max():.4g} mean={v.mean():.4g}" if v.size and v.dtype.kind in "fiub" else ""
                print(f"  {k}: {v.dtype}{list(v.shape)}{stats}")
            print(f"  median {1e3 * float(np.median(times)):.3f} ms over {len(times)} run(s)")
        if args.output_dir:
            for k, v in out.items():
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in k)
                atomic_save_npy(Path(args.output_dir) / f"{safe}.npy", v)
    return 0


def _hub_backends(reg, m) -> list[str]:
    """The available backends that read the model's format (what `hub list` shows it runs on)."""
    return [st.name for st in reg.statuses() if st.devices and st.name in reg.backend_names and m.format in reg.backend(st.name).formats]


def _hub_entry(m, p, backends) -> dict:
    return {**attrs.asdict(m), "install": m.install, "installed": p is not None, "path": p, "backends": backends}


def _hub_list(args) -> None:
    from ._registry import get_registry

    reg = get_registry()
    rows = [(m, p, _hub_backends(reg, m)) for m, p in hub.available()]
    if args.json:
        dump({"models": [_hub_entry(*r) for r in rows], "cache": attrs.asdict(_cache.report("hub"))})
        return
    table = [("NAME", "TASK", "SIZE", "BACKEND", "LICENCE", "PATH")]
    table += [(m.name, m.task, _fmt_bytes(m.size), ",".join(b) or "-", m.licence, str(p) if p else f"not installed: {m.install}") for m, p, b in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    for r in table:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    print(f"{sum(1 for _, p, _ in rows if p)} of {len(rows)} installed; `edgesdk hub info NAME` for inputs, outputs and the install command")
    print(_cache_line(_cache.report("hub")))


def _hub_info(args) -> None:
    from ._registry import get_registry

    m = hub.CATALOG[args.name]
    p = hub.installed_path(m.name)
    entry = _hub_entry(m, p, _hub_backends(get_registry(), m))
    if args.json:
        dump(entry)
        return
    print(f"{m.name}: {m.description}")
    shown = {
        "size": _fmt_bytes(m.size),
        "backends": ", ".join(entry["backends"]) or "none installed",
        "path": p or f"not installed; {m.install}",
        "parts": ", ".join(m.parts),
    }
    for key in ("task", "inputs", "outputs", "licence", "size", "format", "backends", "package", "module", "relpath", "parts", "sha256", "install", "path"):
        value = shown.get(key, entry[key])
        if value:
            print(f"  {key + ':':<10} {value}")


def cmd_hub(args) -> int:
    if args.hub_cmd == "list":
        _hub_list(args)
    elif args.hub_cmd == "info":
        _hub_info(args)
    elif args.hub_cmd == "path":
        print(hub.path(args.name))
    elif args.hub_cmd == "verify":
        digest = hub.verify(args.name)  # a failure is a HubError: exit 1, the cause on stderr
        if args.json:
            dump({"name": args.name, "ok": True, "sha256": digest})
        else:
            print(f"{args.name}: ok sha256={digest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgesdk", description="Run AI models on the best processor of this device.")
    ap.add_argument("--version", action="version", version=f"edgesdk {__version__}")
    _add_verbosity_flags(ap, default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("devices", help="list backends and devices, and why unavailable ones are")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_devices)

    p = sub.add_parser("info", help="model signature, opsets, size and which backends accept it")
    p.add_argument("model", help="model file or hub name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_info)

    p = sub.add_parser("run", help="run a model on inputs from .npy files")
    p.add_argument("model", help="model file or hub name")
    p.add_argument("--input", "-i", action="append", metavar="NAME=FILE.npy")
    p.add_argument("--random", action="store_true", help="fill inputs not given with random data (symbolic dims = 1)")
    p.add_argument("--dim", action="append", metavar="SYMBOL=N", help="value of a symbolic dimension for --random (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="timed runs after one warm-up")
    p.add_argument("--output-dir", "-o", help="save each output as NAME.npy here")
    p.add_argument("--json", action="store_true")
    _add_placement_args(p)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("hub", help="ready models shipped in PyPI wheels")
    hs = p.add_subparsers(dest="hub_cmd", required=True)
    hs.add_parser("list", help="every catalogue model: task, size, backend, licence").add_argument("--json", action="store_true")
    for name in ("info", "path", "verify"):
        q = hs.add_parser(name)
        q.add_argument("name", choices=sorted(hub.CATALOG), metavar="NAME")
    for name in ("info", "verify"):
        hs.choices[name].add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_hub)

    _add_llm_commands(sub)
    _accept_verbosity_after_command(ap)
    return ap


def _add_verbosity_flags(p, default) -> None:
    p.add_argument("-v", "--verbose", action="count", default=default, help="more logging (-vv for debug)")
    p.add_argument("-q", "--quiet", action="count", default=default, help="errors only, and no progress bars")


def _accept_verbosity_after_command(parser) -> None:
    """Give every (sub)command ``-v``/``-q`` too, so ``edgesdk generate ... -q`` works as users type it.
    SUPPRESS as the default keeps a flag given before the command from being reset by the subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                if not any(o in sp._option_string_actions for o in ("-v", "-q")):
                    _add_verbosity_flags(sp, default=argparse.SUPPRESS)
                _accept_verbosity_after_command(sp)


def _configure_output(args) -> None:
    """Logging level from -v/-q (each -q one level quieter, each -v one louder); -q also hides progress bars."""
    level = logging.WARNING - 10 * (args.verbose - args.quiet)
    logging.basicConfig(level=min(max(level, logging.DEBUG), logging.CRITICAL), format="%(levelname)s %(name)s: %(message)s")
    _progress.set_enabled(args.quiet == 0)


def _add_llm_commands(sub) -> None:
    from . import _bench_cli, _diff_cli
    from ._registry import get_registry
    from .hybrid import cli as hybrid_cli
    from .llm import cli as llm_cli
    from .quant import cli as quant_cli
    from .serve import cli as serve_cli

    llm_cli.add_commands(sub, _add_placement_args, _options)
    hybrid_cli.add_commands(sub, _add_placement_args, _options)
    serve_cli.add_commands(sub, _add_placement_args, _options)
    _diff_cli.add_commands(sub, _add_placement_args, _options)
    _bench_cli.add_commands(sub, _add_placement_args, _options)
    reg = get_registry()
    quant_cli.add_commands(sub, _add_placement_args, _options, reg.collect("edgesdk_quantize_targets"))
    # Plugins last, so a plugin cannot take the name of a built-in command (argparse refuses the clash).
    reg.call_observers("edgesdk_cli_commands", subparsers=sub, add_placement_args=_add_placement_args, options_fn=_options)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    _configure_output(args)
    try:
        return args.fn(args) or 0
    except EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
