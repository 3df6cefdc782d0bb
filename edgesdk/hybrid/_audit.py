"""Audit log: one JSON line per routing decision, so a user can prove what left the device."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

__all__ = ["AuditLog", "sha256_text"]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class AuditLog:
    """Appends records to a JSON-lines file. Each record is written with one ``write`` of a whole
    line and fsynced, so a crash never leaves a half record that a reader would mis-parse."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps({"ts": time.time(), **record}, ensure_ascii=False, sort_keys=True) + "\n"
        data = line.encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
