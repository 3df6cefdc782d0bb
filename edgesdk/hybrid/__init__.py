"""Hybrid AI: keep work on the device, escalate to a cloud serving engine only when policy allows.

from edgesdk.hybrid import Orchestrator, Policy, OpenAICompatible
orch = Orchestrator(device=edgesdk.Session("hub:smollm2-135m"),
                    cloud=OpenAICompatible(base_url="https://...", model="...", api_key_env="EDGE_CLOUD_KEY"),
                    policy=Policy(privacy="strict", max_latency_s=2.0, min_confidence=0.5),
                    audit_log="audit.jsonl")
ans = orch.generate("Summarize my meeting with anna@example.com tomorrow at 10")
ans.text, ans.route, ans.reasons
"""

from ._audit import AuditLog
from ._cloud import ChatStream, CloudReply, OpenAICompatible, V2Client
from ._http import CircuitBreaker, CloudError
from ._orchestrator import Answer, AnswerStream, DeviceState, Orchestrator, read_device_state
from ._policy import Guardrails, Policy
from ._privacy import (
    BUILTIN_DETECTORS,
    DEFAULT_PHONE_REGIONS,
    Findings,
    Redaction,
    RegexDetector,
    Span,
    Unsure,
    builtin_detectors,
    find_private,
    redact,
)

__all__ = [
    "Answer",
    "AnswerStream",
    "AuditLog",
    "BUILTIN_DETECTORS",
    "ChatStream",
    "CircuitBreaker",
    "CloudError",
    "CloudReply",
    "DEFAULT_PHONE_REGIONS",
    "DeviceState",
    "Findings",
    "Guardrails",
    "OpenAICompatible",
    "Orchestrator",
    "Policy",
    "Redaction",
    "RegexDetector",
    "Span",
    "Unsure",
    "V2Client",
    "builtin_detectors",
    "find_private",
    "read_device_state",
    "redact",
]
