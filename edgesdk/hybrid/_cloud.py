"""Clients for existing serving engines: OpenAI-compatible chat completions (vLLM, llama.cpp
server, TGI, ...) and the Open Inference Protocol V2 (KServe, Triton, MLServer) for tensors."""

from __future__ import annotations

import os
from typing import Iterator, Mapping, Sequence

import attrs
import numpy as np

from ._http import CircuitBreaker, CloudError, HttpTransport

__all__ = ["OpenAICompatible", "V2Client", "CloudReply"]


@attrs.frozen
class CloudReply:
    text: str
    tokens_in: int
    tokens_out: int
    model: str


class OpenAICompatible:
    """``/v1/chat/completions`` client. The API key is read from ``api_key_env`` at each request and
    never stored in an attribute, logged or put in an error message."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, *, timeout_s: float = 30.0,
                 retries: int = 2, backoff_s: float = 0.25, verify_tls: bool = True, ca_file: str | None = None,
                 breaker: CircuitBreaker | None = None):
        if not isinstance(model, str) or not model:
            raise ValueError("model must be a non-empty string")
        self.model, self.api_key_env = model, api_key_env
        base = base_url.rstrip("/")
        if not base.endswith("/v1"):
            base += "/v1"
        self.http = HttpTransport(base, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, verify_tls=verify_tls,
                                  ca_file=ca_file, breaker=breaker, headers=self._auth)

    def _auth(self) -> dict:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env)
        if not key:
            raise CloudError("connection", f"environment variable {self.api_key_env} (the API key) is not set")
        return {"Authorization": f"Bearer {key}"}

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open (the cloud failed repeatedly)."""
        return self.http.breaker.allow()

    def _body(self, messages, max_tokens, temperature, stream):
        return {"model": self.model, "messages": list(messages), "max_tokens": max_tokens, "temperature": temperature, "stream": stream}

    def chat(self, messages: Sequence[Mapping[str, str]], *, max_tokens: int = 256, temperature: float = 0.0) -> CloudReply:
        out = self.http.request_json("POST", "/chat/completions", self._body(messages, max_tokens, temperature, False))
        try:
            text = out["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            self.http.breaker.failure()
            raise CloudError("malformed", f"no choices[0].message.content in answer: {str(out)[:120]}") from exc
        usage = out.get("usage") or {}
        return CloudReply(text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), str(out.get("model", self.model)))

    def chat_stream(self, messages, *, max_tokens: int = 256, temperature: float = 0.0) -> Iterator[str]:
        for event in self.http.stream_events("/chat/completions", self._body(messages, max_tokens, temperature, True)):
            try:
                piece = (event["choices"][0].get("delta") or {}).get("content")
            except (KeyError, IndexError, TypeError, AttributeError) as exc:
                raise CloudError("malformed", f"stream event without choices[0].delta: {str(event)[:120]}") from exc
            if piece:
                yield piece


_V2_TYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}
_V2_NAMES = {np.dtype(v): k for k, v in _V2_TYPES.items()}


class V2Client:
    """Open Inference Protocol V2 over REST: ``ready``, ``model_metadata``, ``infer``."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0, retries: int = 2, backoff_s: float = 0.25,
                 verify_tls: bool = True, ca_file: str | None = None, breaker: CircuitBreaker | None = None):
        self.http = HttpTransport(base_url, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s,
                                  verify_tls=verify_tls, ca_file=ca_file, breaker=breaker)

    def ready(self, model: str | None = None) -> bool:
        try:
            self.http.request("GET", f"/v2/models/{model}/ready" if model else "/v2/health/ready")
            return True
        except CloudError:
            return False

    def model_metadata(self, model: str) -> dict:
        return self.http.request_json("GET", f"/v2/models/{model}")

    def infer(self, model: str, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        body_inputs = []
        for name, arr in inputs.items():
            arr = np.asarray(arr)
            if arr.dtype not in _V2_NAMES:
                raise ValueError(f"input {name!r}: dtype {arr.dtype} has no V2 datatype")
            body_inputs.append({"name": name, "shape": list(arr.shape), "datatype": _V2_NAMES[arr.dtype], "data": arr.ravel().tolist()})
        body = {"inputs": body_inputs}
        if outputs:
            body["outputs"] = [{"name": n} for n in outputs]
        out = self.http.request_json("POST", f"/v2/models/{model}/infer", body)
        try:
            return {o["name"]: np.asarray(o["data"], dtype=_V2_TYPES[o["datatype"]]).reshape(o["shape"]) for o in out["outputs"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise CloudError("malformed", f"V2 answer has no valid outputs: {str(out)[:160]}") from exc
