"""Text-level accuracy of intents.py on phrasings.json: action right, whole command right, time per utterance.

    python samples/car/eval_intents.py                        # the default method (schema)
    python samples/car/eval_intents.py --method schema,rank   # side by side: prints each miss and per-utterance time

With several methods each gets its own Session and they take turns utterance by utterance, so a
machine shared with other work slows them alike (one method's KV cache is not another's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # intents.py beside this file, wherever it is run from

from edgesdk import Session, SessionOptions  # noqa: E402

from intents import DEFAULT_METHOD, METHODS, interpret, make_classifier  # noqa: E402

PHRASINGS = Path(__file__).with_name("phrasings.json")


def load_cases(which: str = "all") -> list[dict]:
    data = json.loads(PHRASINGS.read_text(encoding="utf-8"))
    return data["dev"] + data["held_out"] if which == "all" else data[which]


def matches(command: dict, expect: dict) -> bool:
    """An expected ``unknown`` only needs the action; any other command must be exactly the one expected."""
    return command["action"] == "unknown" if expect["action"] == "unknown" else command == expect


def evaluate_many(classifiers: dict, cases: list[dict]) -> dict[str, dict]:
    """Each classifier (name -> classifier) on every case, taking turns case by case."""
    runs = {name: {"commands": [], "times": []} for name in classifiers}
    for case in cases:
        for name, classifier in classifiers.items():
            t0 = time.perf_counter()
            command = interpret(case["text"], classifier).command
            runs[name]["times"].append(time.perf_counter() - t0)
            runs[name]["commands"].append(command)
    return {name: _score(cases, r["commands"], r["times"]) for name, r in runs.items()}


def evaluate(classifier, cases: list[dict]) -> dict:
    return evaluate_many({"one": classifier}, cases)["one"]


def _score(cases: list[dict], commands: list[dict], times: list[float]) -> dict:
    n = len(cases)
    actions = sum(c["action"] == case["expect"]["action"] for c, case in zip(commands, cases))
    misses = [{"text": case["text"], "got": c, "expect": case["expect"]} for c, case in zip(commands, cases) if not matches(c, case["expect"])]
    return {
        "n": n,
        "commands": commands,
        "action_accuracy": actions / n,
        "command_accuracy": (n - len(misses)) / n,
        "misses": misses,
        "median_ms": 1000 * statistics.median(times),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm", default="hub:smollm2-135m")
    p.add_argument("--method", default=DEFAULT_METHOD, help=f"one or more of {', '.join(METHODS)}, comma-separated (default {DEFAULT_METHOD})")
    args = p.parse_args(argv)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        p.error(f"--method: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(METHODS)}")
    classifiers = {m: make_classifier(m, Session(args.llm, SessionOptions.for_device("car"))) for m in methods}
    for classifier in classifiers.values():
        classifier.warmup()  # first runs allocate, and build the grammar engine's view of the vocabulary
    for which in ("dev", "held_out"):
        for method, r in evaluate_many(classifiers, load_cases(which)).items():
            print(
                f"{which} [{method}]: {r['n']} phrasings, action {r['action_accuracy']:.0%}, whole command {r['command_accuracy']:.0%}, "
                f"median {r['median_ms']:.0f} ms/utterance"
            )
            for m in r["misses"]:
                print(f"  miss: {m['text']!r} -> {json.dumps(m['got'])} (expected {json.dumps(m['expect'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
