"""The ``--json`` shapes shared by several commands (run, generate): placement and generation stats."""

from __future__ import annotations

import json
import math

import attrs

__all__ = ["dump", "placement_dict", "stats_dict"]


def dump(obj) -> None:
    """Print ``obj`` as the command's whole stdout (paths and enums as strings)."""
    print(json.dumps(obj, indent=2, default=str))


def placement_dict(p) -> dict:
    """A :class:`edgesdk.Placement` as data: the device, how many nodes run where, each fallback, each refusal."""
    counts: dict[str, int] = {}
    for n in p.nodes:
        counts[n.device_id] = counts.get(n.device_id, 0) + 1
    d = p.device
    return {
        "backend": p.backend,
        "device": {"id": d.id, "kind": d.kind, "name": d.name, "simulated": d.simulated},
        "node_counts": counts,
        "fallbacks": [attrs.asdict(n) for n in p.fallback_nodes],
        "refusals": [attrs.asdict(r) for r in p.refusals],
    }


def stats_dict(stats) -> dict | None:
    """:class:`edgesdk.llm.GenerationStats` with its derived rates; an undefined rate (NaN) is null, which JSON has."""
    if stats is None:
        return None
    out = attrs.asdict(stats)
    for rate in ("prompt_tok_s", "decode_tok_s"):
        v = getattr(stats, rate)
        out[rate] = None if math.isnan(v) else v
    return out
