"""``edgesdk serve``: an OpenAI-compatible HTTP API for a language-model Session (Starlette + uvicorn).

::

    import edgesdk
    from edgesdk.serve import BackgroundServer, create_app, serve

    s = edgesdk.Session("hub:smollm2-135m", adapters={"pirate": "pirate-lora.gguf"})
    serve(s, host="0.0.0.0", port=8000)             # blocks until SIGTERM / SIGINT
    with BackgroundServer(s) as srv:                # or in a thread, on a free port
        print(srv.url)                              # http://127.0.0.1:<port>

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (both
with ``stream``), ``GET /health``. Clients choose an adapter with ``model="<id>:<adapter>"``.
Generations run one at a time in a worker thread, behind a bounded queue (full: 429 with
``Retry-After``). Errors have OpenAI's body ``{"error": {"message", "type", "param", "code"}}``:
400 for a malformed request or one the engine refuses, 404 for an unknown model, 413 for a body
over 8 MiB, 422 when a ``response_format`` or tool call could not be completed within
``max_tokens`` (the partial text is in ``error.partial``), 429 when the queue is full, 503 while
shutting down. starlette and uvicorn are imported on first use (``pip install edgesdk[serve]``).
"""

from __future__ import annotations

from .._errors import MissingDependencyError

__all__ = ["BackgroundServer", "ServerStartError", "create_app", "serve"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        from . import _app
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "edgesdk":
            raise
        raise MissingDependencyError("edgesdk serve", "edgesdk[serve]", str(exc)) from exc
    value = getattr(_app, name)
    globals()[name] = value
    return value
