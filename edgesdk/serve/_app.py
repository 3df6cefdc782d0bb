"""The ASGI app (Starlette) and the ways to run it under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import signal
import threading
import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .._errors import EdgeSDKError, GenerationError
from ._responses import ApiError, ChatFormat, CompletionFormat, api_error
from ._schema import Models, parse_chat, parse_completion
from ._worker import Failure, GenerationQueue

__all__ = ["BackgroundServer", "ServerStartError", "create_app", "serve"]

log = logging.getLogger("edgesdk.serve")

# Far above any real chat (a 128k-token context is ~0.5 MB of text); stops a runaway upload early.
MAX_BODY_BYTES = 8 << 20


class ServerStartError(EdgeSDKError, OSError):
    """uvicorn could not start (the port is taken, the host cannot be bound); its log says why."""


def default_model_id(session) -> str:
    """The id a model is served under when none is given: its file name without ``.gguf``."""
    name = Path(session.model.path).name
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


def create_app(
    session, *, model_id: str | None = None, queue_size: int = 16, max_tokens: int = 512, shutdown_timeout: float = 10.0, api_key: str | None = None
) -> Starlette:
    """An OpenAI-compatible ASGI app generating with ``session`` (a language-model Session).

    ``model_id`` is the name clients ask for (default: the model's file name); each LoRA adapter
    the Session was opened with is served as ``"<model_id>:<adapter>"``. ``queue_size`` requests
    may wait behind the running one; more get 429. ``max_tokens`` applies when a request gives none.
    On shutdown, generations still queued or running are cancelled and the worker is given
    ``shutdown_timeout`` seconds to stop. The app does not close the Session.
    ``api_key``: when set, every ``/v1/`` request must send ``Authorization: Bearer <api_key>``
    (what OpenAI clients send for their ``api_key``); others get 401.
    """
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        raise ValueError("api_key must be a non-empty string or None")
    if not callable(getattr(session.runner, "generate_stream", None)):
        raise GenerationError(f"{session.model.path} is not a language model; edgesdk serve needs a GGUF LLM")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    models = Models(model_id or default_model_id(session), tuple(getattr(session.options, "adapters", None) or ()))
    server = _Server(models, GenerationQueue(session, queue_size), max_tokens, shutdown_timeout)
    routes = [
        Route("/v1/models", server.list_models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", server.get_model, methods=["GET"]),
        Route("/v1/chat/completions", server.chat, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/health", server.health, methods=["GET"]),
    ]
    middleware = [Middleware(_RequireKey, key=api_key)] if api_key else []
    app = Starlette(routes=routes, lifespan=server.lifespan, middleware=middleware, exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    app.state.server = server
    return app


class _Server:
    def __init__(self, models: Models, generation: GenerationQueue, max_tokens: int, shutdown_timeout: float):
        self.models, self.generation = models, generation
        self.max_tokens, self.shutdown_timeout = max_tokens, shutdown_timeout
        self.created = int(time.time())

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        yield
        # Off the loop: joining the worker may take up to shutdown_timeout.
        await asyncio.to_thread(self.generation.close, self.shutdown_timeout)

    def _card(self, model_id: str) -> dict:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "edgesdk"}

    async def list_models(self, request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [self._card(m) for m in self.models.ids()]})

    async def get_model(self, request: Request) -> JSONResponse:
        model_id = request.path_params["model_id"]
        try:
            self.models.adapter_for(model_id)
        except ApiError as exc:
            return _error_response(exc)
        return JSONResponse(self._card(model_id))

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": self.models.base, **self.generation.status()})

    async def chat(self, request: Request):
        return await self._generate(request, parse_chat, ChatFormat)

    async def completions(self, request: Request):
        return await self._generate(request, parse_completion, CompletionFormat)

    async def _generate(self, request: Request, parse, format_class):
        try:
            req = parse(await _json_body(request), self.models, self.max_tokens)
            job = self.generation.submit(req.prompt, req.options, req.stream, fit=not req.max_tokens_given)
        except ApiError as exc:
            return _error_response(exc)
        try:
            # A stream's status line waits for its first piece, so a request the engine refuses
            # still gets a real 4xx rather than an error event after "200 OK".
            first = await _first_event(request, job)
        except BaseException:  # cancelled by a server shutdown
            job.cancel()
            raise
        if isinstance(first, Failure):
            return _error_response(api_error(first.error))
        fmt = format_class(req.model)
        if not req.stream:
            return JSONResponse(fmt.response(first))
        return _EventStream(_events(job, first, fmt, req), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _json_body(request: Request) -> dict:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"request body exceeds {MAX_BODY_BYTES >> 20} MiB", code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise _client_gone() from None
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


def _client_gone() -> ApiError:
    # 499 (nginx's "client closed request"): logged, never read by anyone.
    return ApiError(499, "client closed the connection", code="client_disconnected")


async def _first_event(request: Request, job):
    """The job's first event; if the client leaves meanwhile, the job is cancelled and this returns a Failure."""

    async def watch():
        while (await request.receive())["type"] != "http.disconnect":
            pass
        job.cancel()
        job.events.put_nowait(Failure(_client_gone()))

    watcher = asyncio.ensure_future(watch())
    try:
        return await job.events.get()
    finally:
        watcher.cancel()


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _events(job, item, fmt, req):
    """Server-sent events of one generation, starting from its first event ``item``."""
    try:
        head = fmt.first_chunk()
        if head is not None:
            yield _sse(head)
        while isinstance(item, str):
            yield _sse(fmt.text_chunk(item))
            item = await job.events.get()
        if isinstance(item, Failure):
            # "200 OK" is already sent: OpenAI's clients raise on an event carrying "error".
            yield _sse(api_error(item.error).body())
            return
        for chunk in fmt.final_chunks(item):
            yield _sse(chunk)
        if req.include_usage:
            yield _sse(fmt.usage_chunk(item))
        yield b"data: [DONE]\n\n"
    finally:
        job.cancel()  # no-op after the last event; otherwise the client left mid-stream


class _EventStream(StreamingResponse):
    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            # A send that fails on a closed socket leaves the loop without closing the generator;
            # closing it here runs its cleanup (cancelling the job) now, not at garbage collection.
            await self.body_iterator.aclose()


class _RequireKey:
    """ASGI wrapper refusing ``/v1/`` requests without the bearer key (``/health`` stays open)."""

    def __init__(self, app, key: str):
        self.app, self._expected = app, f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            given = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
            if not hmac.compare_digest(given, self._expected):  # constant time: no key guessing by timing
                err = ApiError(
                    401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
                )
                await _error_response(err)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return _error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", code=code, headers=dict(exc.headers or {})))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(api_error(exc))


# --- running under uvicorn ----------------------------------------------------------------------


class _Uvicorn(uvicorn.Server):
    """uvicorn, whose graceful shutdown ends generations still running after ``shutdown_timeout``.

    The app cancels them itself, so each client gets an answer (503, or an error event mid-stream)
    and every connection closes in time; uvicorn's own timeout, later, is only a backstop (it
    cancels request tasks, which drops their connections).
    """

    def __init__(self, app, host: str, port: int, shutdown_timeout: float, log_level: str):
        super().__init__(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on", timeout_graceful_shutdown=shutdown_timeout + 5))
        self._generation = app.state.server.generation
        self._shutdown_timeout = shutdown_timeout

    async def shutdown(self, sockets=None) -> None:
        asyncio.get_running_loop().call_later(self._shutdown_timeout, self._generation.cancel_all)
        await super().shutdown(sockets)


@contextlib.contextmanager
def _signals_stop(server: _Uvicorn):
    """SIGTERM/SIGINT stop the server gracefully, and serve() then returns instead of the process dying.

    uvicorn installs its own handlers while serving and re-raises the signal through the previous
    handler once it has shut down; with this one installed, that re-raise is harmless.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda *_: setattr(server, "should_exit", True)) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def serve(session, host: str = "127.0.0.1", port: int = 8000, *, shutdown_timeout: float = 10.0, log_level: str = "info", **app_options) -> bool:
    """Serve ``session`` (see :func:`create_app` for ``app_options``) until SIGTERM or SIGINT.

    Shutdown is graceful: new connections are refused, in-flight requests get ``shutdown_timeout``
    seconds to finish and are then cancelled. Returns True once the generation worker has stopped,
    so the caller may close the Session (False: a generation is still inside the engine).
    """
    app = create_app(session, shutdown_timeout=shutdown_timeout, **app_options)
    server = _Uvicorn(app, host, port, shutdown_timeout, log_level)
    try:
        with _signals_stop(server):
            server.run()
    except SystemExit as exc:  # uvicorn's way of saying it could not start
        raise ServerStartError(f"could not serve on {host}:{port} (see the log above)") from exc
    finally:
        stopped = app.state.server.generation.close(shutdown_timeout)
    if not stopped:
        log.warning("a generation did not stop within %.0f s of shutdown", shutdown_timeout)
    return stopped


class BackgroundServer:
    """:func:`serve` in a daemon thread, for apps (and tests) that serve while doing other work.

    ``port=0`` picks a free port; :attr:`url` is the base URL (``http://host:port``). Use it as a
    context manager or call :meth:`close`.
    """

    def __init__(self, session, host: str = "127.0.0.1", port: int = 0, *, shutdown_timeout: float = 5.0, start_timeout: float = 30.0, **app_options):
        self.app = create_app(session, shutdown_timeout=shutdown_timeout, **app_options)
        self._shutdown_timeout = shutdown_timeout
        self._server = _Uvicorn(self.app, host, port, shutdown_timeout, "warning")
        self._thread = threading.Thread(target=self._server.run, name="edgesdk-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise ServerStartError(f"could not serve on {host}:{port} (see the log)")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def status(self) -> dict:
        """Queue state and counters, as ``GET /health`` reports them."""
        return self.app.state.server.generation.status()

    def close(self) -> bool:
        """Stop serving (graceful, like SIGTERM); True once the generation worker has stopped."""
        self._server.should_exit = True
        self._thread.join(self._shutdown_timeout + 10)  # past uvicorn's own backstop
        return self.app.state.server.generation.close(self._shutdown_timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
