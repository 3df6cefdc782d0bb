"""Why the QNN EP refused a node, read from its own verbose partitioning log.

ONNX Runtime's Python API reports which EP got each node but not why the others declined it; the QNN
EP writes the reason ("Operators of type `Det` are not supported by QNN EP.", "NonZero output shape
must be static", ...) only to ORT's native log on stderr. So, only when a model does not fit the NPU
entirely, the partitioning is repeated with verbose logging while file descriptor 2 points at a
temporary file, and the reasons are parsed from it. Anything else written to stderr meanwhile (by
other threads) is copied back to the real stderr afterwards.

The same redirection (of stdout) hides the banner the HTP library prints once per process when it
loads, which would otherwise corrupt the output of ``edgesdk ... --json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading

__all__ = ["capture_fd", "capture_stderr", "without_banner", "parse_reasons"]

log = logging.getLogger("edgesdk.backends.qnn")

_LOCK = threading.Lock()
_ORT_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \[[VIWEF]:onnxruntime:")
_FAILED = re.compile(r"Validation FAILED for \d+ nodes in OrtNodeUnit \((?P<op>[^)]*)\)")
_NODE = re.compile(r"Operator type: (?P<op>\S+) Node name: (?P<name>.*?) Node index: \d+")
_REASON = re.compile(r"REASON : (?P<reason>.*)")
_VALIDATE = re.compile(r"backendValidateOpConfig\(\) failed for node `(?P<name>[^`]*)` of type `(?P<qop>[^`]*)` with error code (?P<code>\d+)")


@contextlib.contextmanager
def capture_fd(fd: int, keep=lambda lines: lines):
    """Point ``fd`` (1 or 2) at a temp file for the block; yields a list that receives the captured
    text. Lines ``keep(lines)`` returns are written back to the real ``fd`` afterwards."""
    out: list[str] = []
    stream = sys.stdout if fd == 1 else sys.stderr
    with _LOCK, tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            stream.flush()
        except Exception:
            pass
        saved = os.dup(fd)
        try:
            os.dup2(tmp.fileno(), fd)
            yield out
        finally:
            try:
                stream.flush()
            except Exception:
                pass
            os.dup2(saved, fd)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            out.append(text)
            others = list(keep(text.splitlines()))
            if others:
                os.write(fd, ("\n".join(others) + "\n").encode())


def capture_stderr():
    """Capture fd 2, giving back everything that is not an ORT log entry."""
    return capture_fd(2, _strip_ort)


def without_banner(lines):
    """All lines but the HTP library's one-time "# LIBNATIVE: ..." banner, which it prints to stdout."""
    return (ln for ln in lines if "LIBNATIVE" not in ln)


def _strip_ort(lines):
    """Lines not from ORT's logger (an ORT entry may continue on indented lines)."""
    in_ort = False
    for ln in lines:
        if _ORT_LINE.match(ln):
            in_ort = True
            continue
        if in_ort and (ln[:1].isspace() or not ln.strip() or ln.startswith("\x1b[m")):
            continue
        in_ort = False
        if "LIBNATIVE" in ln:  # QNN SDK banner, not a message for the user
            continue
        yield ln


def parse_reasons(text: str) -> dict[str, str]:
    """node name -> the QNN EP's reason for not taking it (first reason seen per node)."""
    reasons: dict[str, str] = {}
    qnn_validate: dict[str, str] = {}
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        m = _VALIDATE.search(ln)
        if m:
            base = re.sub(r"_\d+$", "", m["name"])
            qnn_validate.setdefault(base, f"the HTP backend rejected it as QNN op {m['qop']} (validation error {m['code']})")
            continue
        if not _FAILED.search(ln):
            continue
        names, reason = [], None
        for follow in lines[i + 1 : i + 40]:
            nm = _NODE.search(follow)
            if nm:
                names.append(nm["name"])
                continue
            rm = _REASON.search(follow)
            if rm:
                reason = rm["reason"].strip()
            break
        for name in names:
            if reason:
                reasons.setdefault(name, reason)
    for name, why in qnn_validate.items():
        if reasons.get(name) in (None, "Failed to add node."):
            reasons[name] = why
    return reasons
