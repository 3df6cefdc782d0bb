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

__all__ = sorted([
    "Orchestrator", "Answer", "AnswerStream", "Policy", "Guardrails", "OpenAICompatible", "V2Client", "CloudReply", "ChatStream",
    "CloudError", "CircuitBreaker", "AuditLog", "DeviceState", "read_device_state", "RegexDetector", "Span",
    "Redaction", "find_private", "redact", "BUILTIN_DETECTORS", "DEFAULT_PHONE_REGIONS", "Findings", "Unsure",
    "builtin_detectors",
])
