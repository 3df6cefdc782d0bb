"""Private-data detectors and reversible redaction.

Detectors find spans; checksum-bearing kinds are validated (Luhn for payment cards, ISO 7064
mod-97 for IBANs, :mod:`ipaddress` for IPs) so ordinary numbers are not flagged.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable, Iterable, Protocol, Sequence

import attrs

__all__ = ["Span", "Detector", "RegexDetector", "BUILTIN_DETECTORS", "find_private", "Redaction", "redact", "luhn_ok", "iban_ok"]


@attrs.frozen
class Span:
    start: int
    end: int
    kind: str
    value: str


class Detector(Protocol):
    kind: str

    def find(self, text: str) -> Iterable[Span]: ...


@attrs.frozen
class RegexDetector:
    """Flags matches of ``pattern`` (and, if given, only those ``validate`` accepts) as ``kind``."""

    kind: str
    pattern: re.Pattern = attrs.field(converter=lambda p: re.compile(p) if isinstance(p, str) else p)
    validate: Callable[[str], bool] | None = None

    def find(self, text: str):
        pos = 0
        while (m := self.pattern.search(text, pos)) is not None:
            start, value = m.start(), m.group(0)
            if self.validate is not None and not self.validate(value):
                # A greedy match can swallow the next item ("IBAN IBAN"): try shorter cuts at separators.
                cuts = [i for i in range(len(value) - 1, 0, -1) if value[i] in " -"]
                value = next((value[:i] for i in cuts if self.validate(value[:i])), None)
                if value is None:
                    pos = start + 1
                    continue
            yield Span(start, start + len(value), self.kind, value)
            pos = start + len(value)


def luhn_ok(s: str) -> bool:
    digits = [int(c) for c in s if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(s: str) -> bool:
    s = s.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ip_ok(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def _phone_ok(s: str) -> bool:
    n = sum(c.isdigit() for c in s)
    return 7 <= n <= 15


# Order matters when spans overlap: a card number also looks like a phone number.
BUILTIN_DETECTORS: tuple[RegexDetector, ...] = (
    RegexDetector("email", r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
    RegexDetector("card", r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])", luhn_ok),
    RegexDetector("iban", r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])", iban_ok),
    RegexDetector("ip", r"(?<![\w.:])(?:(?:\d{1,3}\.){3}\d{1,3}|(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{2,39})(?![\w.:])", _ip_ok),
    RegexDetector("phone", r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,3}(?![\w])", _phone_ok),
)


def find_private(text: str, detectors: Sequence[Detector] = BUILTIN_DETECTORS) -> list[Span]:
    """Non-overlapping private spans in ``text``, in order; earlier detectors win overlaps."""
    chosen: list[Span] = []
    for det in detectors:
        for sp in det.find(text):
            if all(sp.end <= c.start or sp.start >= c.end for c in chosen):
                chosen.append(sp)
    return sorted(chosen, key=lambda s: s.start)


@attrs.frozen
class Redaction:
    """Text with private spans replaced by typed placeholders, and the way back."""

    text: str
    mapping: dict = attrs.field(eq=False, repr=False)  # placeholder -> original value
    kinds: tuple[str, ...]

    def restore(self, text: str) -> str:
        """Put the original values back wherever the placeholders appear (e.g. in a cloud answer)."""
        if not self.mapping:
            return text
        pattern = re.compile("|".join(re.escape(k) for k in sorted(self.mapping, key=len, reverse=True)))
        return pattern.sub(lambda m: self.mapping[m.group(0)], text)


def redact(text: str, spans: Sequence[Span]) -> Redaction:
    """Replace each span by ``[KIND_n]``; the same value always gets the same placeholder."""
    out, pos, by_value, counts = [], 0, {}, {}
    for sp in sorted(spans, key=lambda s: s.start):
        out.append(text[pos:sp.start])
        key = (sp.kind, sp.value)
        if key not in by_value:
            counts[sp.kind] = counts.get(sp.kind, 0) + 1
            by_value[key] = f"[{sp.kind.upper()}_{counts[sp.kind]}]"
        out.append(by_value[key])
        pos = sp.end
    out.append(text[pos:])
    mapping = {ph: value for (kind, value), ph in by_value.items()}
    return Redaction("".join(out), mapping, tuple(sorted({s.kind for s in spans})))
