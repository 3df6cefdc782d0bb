"""Text-level accuracy of intents.py on phrasings.json: action right, and whole command right.

    python samples/car/eval_intents.py            # both sets; prints each miss and per-utterance time
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from edgesdk import Session, SessionOptions

from intents import IntentClassifier, interpret

PHRASINGS = Path(__file__).with_name("phrasings.json")


def load_cases(which: str = "all") -> list[dict]:
    data = json.loads(PHRASINGS.read_text(encoding="utf-8"))
    return data["dev"] + data["held_out"] if which == "all" else data[which]


def matches(command: dict, expect: dict) -> bool:
    """An expected ``unknown`` only needs the action; any other command must be exactly the one expected."""
    return command["action"] == "unknown" if expect["action"] == "unknown" else command == expect


def evaluate(classifier: IntentClassifier, cases: list[dict]) -> dict:
    actions = commands = 0
    misses, times = [], []
    for case in cases:
        t0 = time.perf_counter()
        intent = interpret(case["text"], classifier)
        times.append(time.perf_counter() - t0)
        actions += intent.command["action"] == case["expect"]["action"]
        ok = matches(intent.command, case["expect"])
        commands += ok
        if not ok:
            misses.append({"text": case["text"], "got": intent.command, "expect": case["expect"]})
    n = len(cases)
    return {"n": n, "action_accuracy": actions / n, "command_accuracy": commands / n, "misses": misses,
            "median_ms": 1000 * statistics.median(times)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm", default="hub:smollm2-135m")
    args = p.parse_args(argv)
    classifier = IntentClassifier(Session(args.llm, SessionOptions.for_device("car")))
    classifier.classify("warm up")  # first run allocates
    for which in ("dev", "held_out"):
        r = evaluate(classifier, load_cases(which))
        print(f"{which}: {r['n']} phrasings, action {r['action_accuracy']:.0%}, whole command {r['command_accuracy']:.0%}, "
              f"median {r['median_ms']:.0f} ms/utterance")
        for m in r["misses"]:
            print(f"  miss: {m['text']!r} -> {json.dumps(m['got'])} (expected {json.dumps(m['expect'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
