"""``edgesdk bench --plot``: the report as a PNG. Latency per device as a box plot over every timed run
(each run a dot, so a bimodal device shows two clusters); a language model's prompt and decode
speed as bars; with ``--profile`` each device's slowest ops as horizontal bars of their share."""

from __future__ import annotations

import os

from ._errors import EdgeSDKError
from ._io import atomic_open

__all__ = ["plot"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display here, and none needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise EdgeSDKError("--plot needs matplotlib: pip install 'edgesdk[bench]'") from None
    return plt


def _horizontal() -> dict:
    """boxplot's keyword for horizontal boxes: ``orientation`` since matplotlib 3.10, ``vert`` before."""
    import matplotlib

    major, minor = (int(x) for x in matplotlib.__version__.split(".")[:2])
    return {"orientation": "horizontal"} if (major, minor) >= (3, 10) else {"vert": False}


def _label(d) -> str:
    return d.device + ("\n(SIMULATED)" if d.simulated else "")


def plot(report, out) -> None:
    """Write ``report`` (a :class:`edgesdk.bench.BenchReport`) as a PNG to ``out`` (atomically)."""
    if not str(out).lower().endswith(".png"):
        raise EdgeSDKError(f"--plot writes a PNG: give a file name ending in .png, got {out!r}")
    plt = _pyplot()
    import numpy as np

    ok = [d for d in report.devices if d.error is None]
    timed = [d for d in ok if d.timing is not None]
    llms = [d for d in ok if d.llm is not None]
    profiled = [d for d in ok if d.op_times]
    panels = ([("latency", None)] if timed else []) + ([("decode", None), ("prompt", None)] if llms else []) + [("ops", d) for d in profiled]
    if not panels:
        raise EdgeSDKError("nothing to plot: no device produced results")
    rows = [len(timed) if k == "latency" else len(llms) if k in ("decode", "prompt") else len(d.top_ops()) / 2.5 for k, d in panels]
    heights = [1.3 + 0.55 * r for r in rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, sum(heights) + 0.4), squeeze=False, gridspec_kw={"height_ratios": heights})
    name = os.path.basename(report.model)
    for ax, (panel, d) in zip(axes[:, 0], panels):
        if panel == "latency":
            data = [np.asarray(d.timing.samples) * 1e3 for d in timed]
            ax.boxplot(data, widths=0.5, showfliers=False, **_horizontal())
            rng = np.random.default_rng(0)
            for i, xs in enumerate(data, start=1):
                ax.scatter(xs, i + rng.uniform(-0.12, 0.12, len(xs)), s=9, alpha=0.55, color="tab:blue", zorder=3)
                ax.annotate(f"p50 {np.median(xs):.3g} ms", (np.median(xs), i + 0.32), fontsize=8, ha="center")
            ax.set_yticks(range(1, len(timed) + 1), [_label(d) for d in timed], fontsize=8)
            lo, hi = min(x.min() for x in data), max(x.max() for x in data)
            if hi > 20 * lo:
                ax.set_xscale("log")
            ax.set_xlabel("run time (ms)" + (", log scale" if hi > 20 * lo else ""))
            ax.set_title(f"{name}: latency of {report.runs} timed runs per device", fontsize=10)
            ax.grid(axis="x", alpha=0.3)
        elif panel in ("decode", "prompt"):
            speed = [d.llm.decode_tok_s if panel == "decode" else d.llm.prompt_tok_s for d in llms]
            ax.barh(range(len(llms)), speed, 0.5, color="tab:blue" if panel == "decode" else "tab:green")
            for i, (d, v) in enumerate(zip(llms, speed)):
                share = "" if panel == "prompt" or d.llm.dram_share is None else f"  ({100 * d.llm.dram_share:.0f}% of DRAM bandwidth)"
                ax.annotate(f"{v:.1f}{share}", (v, i), fontsize=8, va="center", xytext=(3, 0), textcoords="offset points")
            ax.set_yticks(range(len(llms)), [_label(d) for d in llms], fontsize=8)
            ax.set_ylim(len(llms) - 0.4, -0.6)
            ax.set_xlim(0, max(speed) * 1.45)
            ax.set_xlabel("tokens per second")
            first = llms[0].llm
            what = f"decode ({first.generated_tokens} tokens per run)" if panel == "decode" else f"prompt processing ({first.prompt_tokens}-token prompt)"
            ax.set_title(f"{name}: {what}", fontsize=10)
            ax.grid(axis="x", alpha=0.3)
        else:
            top = d.top_ops()[::-1]
            ax.barh(range(len(top)), [100 * s for _, s in top], color="tab:orange")
            ax.set_yticks(range(len(top)), [f"{o.op_type}  {o.node[:40]}" for o, _ in top], fontsize=7)
            for i, (o, s) in enumerate(top):
                ax.annotate(
                    f"{100 * s:.1f}%  {o.total_s / max(o.calls, 1) * 1e3:.3g} ms/call",
                    (100 * s, i),
                    fontsize=7,
                    va="center",
                    xytext=(3, 0),
                    textcoords="offset points",
                )
            ax.set_xlim(0, min(100, 100 * max(s for _, s in top) * 1.35))
            ax.set_xlabel("share of all op time (%)")
            ax.set_title(f"{name}: slowest ops on {d.device}", fontsize=10)
    fig.tight_layout()
    with atomic_open(out) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
