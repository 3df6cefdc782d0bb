"""Summarize a scanned page on the PC: PP-OCR reads it, SmolLM2 summarizes it, nothing leaves the device.

    python samples/pc/summarize.py PAGE.png [--cloud URL] [--audit audit.jsonl] [--max-tokens 80]

Two pipeline stages, each placed by edgesdk: "ocr" (PP-OCRv4 detection, direction and recognition
models) -> "summarize" (SmolLM2-135M through a hybrid Orchestrator). The document is marked private
and the policy is strict, so even with ``--cloud`` the request is answered on the device; the audit
log records that decision. The last lines printed are the pipeline's per-stage placement/latency report.
"""

from __future__ import annotations

import argparse
import sys

import edgesdk
from edgesdk import SessionOptions
from edgesdk.errors import EdgeSDKError
from edgesdk.hybrid import Orchestrator, OpenAICompatible, Policy
from edgesdk.pipeline import Pipeline, Stage, StageSpec
from edgesdk.vision import TextRecognizer, load_image

PROMPT = "Summarize this document in one or two sentences.\n\nDocument:\n{text}"


class OcrStage(Stage):
    """Page image -> its text, one recognised line per line."""

    def __init__(self, options: SessionOptions):
        self.ocr = TextRecognizer(options)

    @property
    def sessions(self):
        return self.ocr.sessions

    def process(self, image, ctx):
        lines = self.ocr.read_text(image)
        ctx.emit("lines", lines)
        yield "\n".join(line.text for line in lines)


class SummarizeStage(Stage):
    """Document text -> streamed summary, routed by a strict-privacy Orchestrator."""

    def __init__(self, options: SessionOptions, cloud_url: str | None, audit: str | None, max_tokens: int):
        device = edgesdk.Session("hub:smollm2-135m", options)
        cloud = OpenAICompatible(base_url=cloud_url, model="summarizer", timeout_s=10, retries=0) if cloud_url else None
        self.orch = Orchestrator(device, cloud, Policy(privacy="strict"), audit_log=audit, max_tokens=max_tokens)

    @property
    def sessions(self):
        return {"llm": self.orch.device}

    def process(self, text, ctx):
        if not text.strip():
            ctx.emit("answer", None)
            yield "(no text found on the page)"
            return
        # private=True: a document is private whether or not the detectors find an email or IBAN in it.
        stream = self.orch.generate_stream(PROMPT.format(text=text), private=True)
        try:
            yield from stream
        finally:
            stream.close()
        ctx.emit("answer", stream.answer)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", help="page image (PNG, JPEG, ...)")
    ap.add_argument("--cloud", metavar="URL", help="an OpenAI-compatible server; private documents are still never sent")
    ap.add_argument("--audit", metavar="PATH", help="append every routing decision to this JSON-lines file")
    ap.add_argument("--max-tokens", type=int, default=80)
    args = ap.parse_args(argv)
    try:
        image = load_image(args.page)
    except EdgeSDKError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    options = SessionOptions.for_device("pc")
    pipe = Pipeline(
        [
            StageSpec("ocr", lambda opts: OcrStage(opts)),
            StageSpec("summarize", lambda opts: SummarizeStage(opts, args.cloud, args.audit, args.max_tokens)),
        ],
        options=options,
    )
    answer = None
    with pipe:
        for ev in pipe.run([image]):
            if ev.kind == "lines":
                print(f"== text ({len(ev.value)} lines) ==")
                print("\n".join(line.text for line in ev.value))
                print("== summary ==", flush=True)
            elif ev.kind == "output":
                print(ev.value, end="", flush=True)
            elif ev.kind == "answer":
                answer = ev.value
        print()
        if answer is not None:
            print(f"route: {answer.route} ({'; '.join(answer.reasons)})")
        print("== report ==")
        print(pipe.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
