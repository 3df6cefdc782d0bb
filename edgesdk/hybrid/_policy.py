"""Routing policy and on-device guardrails (frozen attrs, validated on construction)."""

from __future__ import annotations

import re

import attrs

from .._options import _one_of
from ._privacy import (
    DEFAULT_PHONE_REGIONS,
    builtin_detectors,
    check_detectors,
    check_phone_regions,
)

__all__ = ["Policy", "Guardrails", "PRIVACY_MODES", "DEFAULT_REFUSALS"]

PRIVACY_MODES = ("strict", "redact", "allow")


def _nonneg_or_none(instance, attribute, value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
        raise ValueError(f"{attribute.name} must be a number >= 0 or None, got {value!r}")


def _unit(instance, attribute, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value!r}")


@attrs.frozen
class Policy:
    """When a request may leave the device.

    ``privacy``: ``"strict"`` = a request with private data never leaves the device; ``"redact"`` =
    it may, with typed placeholders that are restored in the answer; ``"allow"`` = no privacy gate.
    ``min_confidence``: a device answer whose confidence (geometric-mean token probability) is
    lower is escalated when allowed. ``max_latency_s``: when the device is expected to take longer,
    the cloud is asked first. Prices are per 1000 tokens; ``max_cost`` caps one request and
    ``budget`` the orchestrator's lifetime spend. Below ``min_battery_percent`` (on battery) or at
    or above ``max_temperature_c`` the device offloads to the cloud when allowed.

    ``phone_regions``: the regions whose national phone formats are recognised ("030 1234 5678"
    needs "DE"); numbers written with "+" or "00" and a country code are recognised whatever the
    regions. ``detectors`` default to :func:`~edgesdk.hybrid.builtin_detectors` for those regions;
    pass your own (e.g. ``builtin_detectors(("BR",)) + (my_detector,)``) to replace them, in which
    case ``phone_regions`` is not consulted. A near-miss a detector is unsure about (an IBAN whose
    checksum fails, a long unclassified number) counts as private data: strict keeps it on the
    device, redact replaces it too.
    """

    privacy: str = attrs.field(default="strict", validator=_one_of(PRIVACY_MODES))
    allow_cloud: bool = True
    min_confidence: float = attrs.field(default=0.0, validator=_unit)
    max_latency_s: float | None = attrs.field(default=None, validator=_nonneg_or_none)
    price_in_per_1k: float = attrs.field(default=0.0, validator=_nonneg_or_none)
    price_out_per_1k: float = attrs.field(default=0.0, validator=_nonneg_or_none)
    max_cost: float | None = attrs.field(default=None, validator=_nonneg_or_none)
    budget: float | None = attrs.field(default=None, validator=_nonneg_or_none)
    min_battery_percent: float | None = attrs.field(default=None, validator=_nonneg_or_none)
    max_temperature_c: float | None = attrs.field(default=None, validator=_nonneg_or_none)
    phone_regions: tuple[str, ...] = attrs.field(default=DEFAULT_PHONE_REGIONS, converter=check_phone_regions)
    detectors: tuple = attrs.field(converter=check_detectors)

    @detectors.default
    def _builtin_for_regions(self):
        return builtin_detectors(self.phone_regions)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in / 1000 * self.price_in_per_1k + tokens_out / 1000 * self.price_out_per_1k


DEFAULT_REFUSALS = (
    r"\bI(?:'m| am) (?:sorry|unable|not able)\b",
    r"\bI can(?:'t|not) (?:help|assist|answer|provide|do that)\b",
    r"\bAs an AI\b",
)


def _patterns(v) -> tuple[re.Pattern, ...]:
    return tuple(re.compile(p, re.IGNORECASE) if isinstance(p, str) else p for p in v)


@attrs.frozen
class Guardrails:
    """Checks that run on the device before anything is sent anywhere, and on every answer.

    ``blocked_patterns`` (regexes) and ``blocked_topics`` (words/phrases, matched case-insensitively
    on word boundaries) block a request or an answer; ``max_input_chars``/``max_output_chars`` bound
    sizes; ``refusal_patterns`` recognise an answer that declines, which counts as a failed answer.
    """

    blocked_patterns: tuple[re.Pattern, ...] = attrs.field(default=(), converter=_patterns)
    blocked_topics: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    max_input_chars: int | None = attrs.field(default=8000, validator=_nonneg_or_none)
    max_output_chars: int | None = attrs.field(default=None, validator=_nonneg_or_none)
    refusal_patterns: tuple[re.Pattern, ...] = attrs.field(default=DEFAULT_REFUSALS, converter=_patterns)

    def _blocked(self, text: str) -> str | None:
        for p in self.blocked_patterns:
            if p.search(text):
                return f"matches blocked pattern {p.pattern!r}"
        for t in self.blocked_topics:
            if re.search(rf"\b{re.escape(t)}\b", text, re.IGNORECASE):
                return f"mentions blocked topic {t!r}"
        return None

    def check_input(self, text: str) -> str | None:
        """The reason ``text`` must not be processed, or None."""
        if self.max_input_chars is not None and len(text) > self.max_input_chars:
            return f"input is {len(text)} characters, over the {self.max_input_chars} limit"
        return self._blocked(text)

    def check_output(self, text: str) -> str | None:
        if self.max_output_chars is not None and len(text) > self.max_output_chars:
            return f"answer is {len(text)} characters, over the {self.max_output_chars} limit"
        return self._blocked(text)

    def is_refusal(self, text: str) -> bool:
        return any(p.search(text) for p in self.refusal_patterns)
