"""An OpenAI-compatible API server for the workbench's model.

    python -m glm_client.server --host 127.0.0.1 --port 8000
    SERVER_API_KEY=secret python -m glm_client.server      # clients must send "Bearer secret"

Routes: GET /health, GET /v1/models, POST /v1/chat/completions (plain or streamed
as server-sent events, with tools). The models are MODELS_FILE's (glm_client/models.py),
or else the one `load_client()` picks (the embedded default, MODEL_PATH, or another
server at OPENAI_BASE_URL). A request's `model` picks one, loaded on first use; an
unknown name is a 404. With no MODELS_FILE any name reaches the one model, as before.

Each request's generation is a blocking iterator; every step of it runs in a worker
thread so the event loop keeps serving other requests, and each request has its own
iterator, so concurrent replies never mix. A client that disconnects mid-stream
stops its generation at the next token.

Browsers can reach a server on 127.0.0.1 too: a web page can rebind its own name to
127.0.0.1 (DNS rebinding) or POST a `text/plain` "simple request" without a CORS
check. So every request must name a loopback host or one of ALLOWED_HOSTS in its
Host header, and chat requests must be `application/json`. Request sizes are capped
(glm_client/server_request.py) before the body is read, and a 500 says only
"internal error": the details go to the server's log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import socket
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from glm_client.client import Client
from glm_client.constrained import GRAMMAR_ERROR_PREFIX
from glm_client.events import Done, Event
from glm_client.models import ModelPool, UnknownModel
from glm_client.server_request import (
    ChatRequest,
    RequestError,
    RequestLimits,
    body_too_large,
    parse_chat_request,
)
from glm_client.server_response import ReplyWriter, error_body

API_KEY_ENV = "SERVER_API_KEY"
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
INTERNAL_ERROR = "The server had an internal error; its log has the details."
# Done errors the caller caused (and can fix), so they keep their sentence and get a 400;
# any other failure is a 500 that names nothing internal.
CALLER_ERRORS = {
    GRAMMAR_ERROR_PREFIX: "tools",
    "The last message is too long": "messages",
    "Forcing a tool call is not supported": "tool_choice",
}

log = logging.getLogger("glm_client.server")


class AuthError(Exception):
    """A /v1 request without the right bearer token."""


class HostCheck:
    """ASGI middleware: a 400 for any request whose Host header is not a loopback name or an allowed host.

    Against DNS rebinding: a page at evil.example whose name now points at 127.0.0.1
    still sends `Host: evil.example`.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] = ()) -> None:
        self.app = app
        self.allowed = {host.lower() for host in (*LOOPBACK_HOSTS, *allowed_hosts)}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # no websocket routes exist; starlette refuses those
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not host_allowed(host, self.allowed):
                response = JSONResponse(
                    error_body(
                        f"The Host header {host[:100]!r} is not allowed; "
                        "add the name to the server's ALLOWED_HOSTS to use it.",
                        code="invalid_host",
                    ),
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_allowed(host: str, allowed: set[str]) -> bool:
    """Whether a Host header value (any port) names an allowed host; "*" allows all, "*.x" any subdomain of x."""
    host = host.strip().lower()
    name = host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.rpartition(":")[0] or host
    if host.count(":") > 1 and not host.startswith("["):
        return False  # an unbracketed IPv6 address is not a valid Host header
    if not name or name.endswith("."):
        return False
    if "*" in allowed or name in allowed:
        return True
    return any(pattern.startswith("*.") and name.endswith(pattern[1:]) for pattern in allowed)


class ServedModels:
    """What an app serves: a ModelPool, or one client that answers whatever `model` a request names."""

    def __init__(self, served: Client | ModelPool) -> None:
        self.pool = served if isinstance(served, ModelPool) else None
        self.single = None if isinstance(served, ModelPool) else served

    @property
    def names(self) -> list[str]:
        return self.pool.names if self.pool is not None else [self._single().info.name]

    def resolve(self, requested: str) -> str:
        """The served name a request's `model` means; raises UnknownModel."""
        return self.pool.resolve(requested) if self.pool is not None else self._single().info.name

    def get(self, name: str) -> Client:
        """The model's client, loaded first if need be: blocking, so called in a worker thread."""
        if self.pool is None:
            return self._single()
        return self.pool.get(name, progress=lambda message: log.info("%s: %s", name, message))

    def context_length(self, name: str) -> int | None:
        """The model's context, where knowing it costs nothing: a loaded local model (a server's means a request)."""
        if self.pool is None:
            return self._single().info.context_length
        client = self.pool.client(name)
        return client.info.context_length if client is not None and self.pool.spec(name).kind == "local" else None

    def _single(self) -> Client:
        assert self.single is not None
        return self.single


def create_app(
    client: Client | ModelPool,
    api_key: str | None = None,
    allowed_hosts: tuple[str, ...] = (),
    limits: RequestLimits | None = None,
) -> FastAPI:
    """The API app serving `client`: one model, or a ModelPool's models chosen by each request's `model`.

    With `api_key`, /v1 routes need `Authorization: Bearer <api_key>`. Requests must
    name a loopback host or one of `allowed_hosts` ("*" for any) in their Host header.
    """
    served = ServedModels(client)
    app = FastAPI(title="GLM Workbench API", docs_url=None, redoc_url=None)
    app.add_middleware(HostCheck, allowed_hosts=allowed_hosts)
    started = int(time.time())
    limits = limits or RequestLimits()

    def check_key(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise AuthError

    @app.exception_handler(RequestError)
    async def bad_request(_request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error_body(error.message, param=error.param, code=error.code), status_code=error.status)

    @app.exception_handler(UnknownModel)
    async def unknown_model(_request: Request, error: UnknownModel) -> JSONResponse:
        return JSONResponse(error_body(str(error), param="model", code="model_not_found"), status_code=404)

    @app.exception_handler(AuthError)
    async def unauthorized(_request: Request, _error: AuthError) -> JSONResponse:
        message = f"Missing or incorrect API key: send the server's {API_KEY_ENV} as 'Authorization: Bearer <key>'."
        return JSONResponse(error_body(message, code="invalid_api_key"), status_code=401)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(error.detail)), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return JSONResponse(error_body(INTERNAL_ERROR, "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": served.names[0]}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        listed = []
        for name in served.names:
            model: dict[str, Any] = {"id": name, "object": "model", "created": started, "owned_by": "glm-workbench"}
            context_length = served.context_length(name)
            if context_length is not None:
                model["max_model_len"] = context_length
            listed.append(model)
        return {"object": "list", "data": listed}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        check_key(request)
        check_json(request)
        chat = parse_chat_request(await read_body(request, limits.max_body_bytes), limits)
        name = served.resolve(chat.model)
        client = await run_in_threadpool(served.get, name)  # the first request for a model loads it
        writer = ReplyWriter(name, chat.legacy_functions)
        if chat.stream:
            return StreamingResponse(
                _sse(client, chat, writer), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        async with contextlib.aclosing(_generate(client, chat)) as events:
            async for event in events:
                writer.add(event)
        if writer.done is not None and writer.done.finish_reason == "error":
            caller_error = _caller_error(writer.done)
            if caller_error and not writer.text and not writer.calls:
                return JSONResponse(caller_error, status_code=400)
            return JSONResponse(error_body(_model_error(writer.done), "server_error"), status_code=500)
        return JSONResponse(writer.completion())

    return app


def check_json(request: Request) -> None:
    """A 415 unless the body is declared JSON: a text/plain POST is a CORS simple request any page can send."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise RequestError(
            f"The request body must be sent as Content-Type: application/json, not {media_type or 'nothing'!r}.",
            code="unsupported_media_type",
            status=415,
        )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused with a 413 as soon as it is declared or grows over `max_bytes`."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise body_too_large(RequestLimits(max_body_bytes=max_bytes))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # chunked bodies declare no length: count as they come
        size += len(chunk)
        if size > max_bytes:
            raise body_too_large(RequestLimits(max_body_bytes=max_bytes))
        chunks.append(chunk)
    return b"".join(chunks)


def _caller_error(done: Done) -> dict[str, Any] | None:
    """The 400 error body for a failure the caller caused, else None."""
    error = done.error or ""
    for start, param in CALLER_ERRORS.items():
        if error.startswith(start):
            return error_body(error, param=param)
    return None


def _model_error(done: Done) -> str:
    """The generic sentence for a failed reply; the real one goes to the log."""
    log.error("The model failed: %s", done.error)
    return INTERNAL_ERROR


async def _generate(client: Client, chat: ChatRequest) -> AsyncGenerator[Event, None]:
    """The client's events, each step computed in a worker thread.

    When the consumer stops early (a disconnect cancels the response), generation is
    stopped and the generator closed. Closing is safe here: anyio lets the step that
    is running in a thread finish before the cancellation reaches this frame.
    """
    cancel = threading.Event()
    events = client.stream(chat.messages, chat.tools, cancel=cancel, **chat.params)
    try:
        async for event in iterate_in_threadpool(events):
            yield event
    finally:
        cancel.set()
        if hasattr(events, "close"):
            events.close()


async def _sse(client: Client, chat: ChatRequest, writer: ReplyWriter) -> AsyncIterator[str]:
    """The reply as server-sent events; a failure becomes an error chunk, and `[DONE]` always ends it."""
    yield _event(writer.first_chunk())
    try:
        async with contextlib.aclosing(_generate(client, chat)) as events:
            async for event in events:
                for chunk in writer.add(event):
                    yield _event(chunk)
        if writer.done is not None and writer.done.finish_reason == "error":
            caller_error = _caller_error(writer.done)
            if caller_error:
                yield _event(caller_error)
            else:
                yield _event(error_body(_model_error(writer.done), "server_error"))
        else:
            yield _event(writer.finish_chunk())
            if chat.include_usage:
                yield _event(writer.usage_chunk())
    except Exception:  # headers are sent: the error has to travel in the stream
        log.exception("A streamed reply failed")
        yield _event(error_body(INTERNAL_ERROR, "server_error"))
    yield "data: [DONE]\n\n"


def _event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` under uvicorn in a background thread (tests, benchmarks); yields its base URL.

    Port 0 picks a free port. The server stops when the block ends.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="api-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"The API server could not start on {host}:{port}.")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m glm_client.server",
        description=f"Serve the workbench's model over an OpenAI-compatible API. Set {API_KEY_ENV} to require a key.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    args = parser.parse_args(argv)

    from glm_client.config import ConfigError, Settings
    from glm_client.loader import ModelLoadError, load_client

    try:
        settings = Settings.from_env()
        pool = ModelPool(settings, load_client)
        # The default model loads now: one that cannot load stops start-up; the others load on first request.
        pool.get(progress=lambda message: print(message, file=sys.stderr, flush=True))
    except (ModelLoadError, ConfigError) as error:
        print(f"The model could not be loaded. {error}", file=sys.stderr)
        return 1
    allowed_hosts = settings.allowed_hosts
    bound = f"[{args.host}]" if ":" in args.host else args.host.lower()
    if args.host in ("0.0.0.0", "::"):
        if not allowed_hosts:
            print(
                "Listening on all interfaces, but only loopback Host names are answered: "
                "set ALLOWED_HOSTS to the names clients use.",
                file=sys.stderr,
            )
    elif not host_allowed(bound, set(LOOPBACK_HOSTS)):
        allowed_hosts += (bound,)  # the address it listens on is a name clients will use
    api_key = settings.server_api_key or None
    print(
        f"Serving {', '.join(pool.names)} at http://{args.host}:{args.port}/v1"
        + (f" (clients must send the {API_KEY_ENV} key)" if api_key else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_app(pool, api_key, allowed_hosts), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
