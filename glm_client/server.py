"""An OpenAI-compatible API server for the workbench's model.

    python -m glm_client.server --host 127.0.0.1 --port 8000
    SERVER_API_KEY=secret python -m glm_client.server      # clients must send "Bearer secret"

Routes: GET /health, GET /v1/models, POST /v1/chat/completions (plain or streamed
as server-sent events, with tools). The model is whatever `load_client()` picks
(the embedded default, MODEL_PATH, or another server at OPENAI_BASE_URL).

Each request's generation is a blocking iterator; every step of it runs in a worker
thread so the event loop keeps serving other requests, and each request has its own
iterator, so concurrent replies never mix. A client that disconnects mid-stream
stops its generation at the next token.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import iterate_in_threadpool
from starlette.exceptions import HTTPException

from glm_client.client import Client
from glm_client.events import Event
from glm_client.server_request import ChatRequest, RequestError, parse_chat_request
from glm_client.server_response import ReplyWriter, error_body

API_KEY_ENV = "SERVER_API_KEY"


class AuthError(Exception):
    """A /v1 request without the right bearer token."""


def create_app(client: Client, api_key: str | None = None) -> FastAPI:
    """The API app serving `client`; with `api_key`, /v1 routes need `Authorization: Bearer <api_key>`."""
    app = FastAPI(title="GLM Workbench API", docs_url=None, redoc_url=None)
    started = int(time.time())

    def check_key(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise AuthError

    @app.exception_handler(RequestError)
    async def bad_request(_request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse(error_body(error.message, param=error.param, code=error.code), status_code=400)

    @app.exception_handler(AuthError)
    async def unauthorized(_request: Request, _error: AuthError) -> JSONResponse:
        message = f"Missing or incorrect API key: send the server's {API_KEY_ENV} as 'Authorization: Bearer <key>'."
        return JSONResponse(error_body(message, code="invalid_api_key"), status_code=401)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse(error_body(str(error.detail)), status_code=error.status_code, headers=error.headers)

    @app.exception_handler(Exception)
    async def server_error(_request: Request, error: Exception) -> JSONResponse:
        return JSONResponse(error_body(f"{type(error).__name__}: {error}", "server_error"), status_code=500)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": client.info.name}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        model = {
            "id": client.info.name,
            "object": "model",
            "created": started,
            "owned_by": "glm-workbench",
            "max_model_len": client.info.context_length,
        }
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse:
        check_key(request)
        chat = parse_chat_request(await request.body())
        writer = ReplyWriter(client.info.name, chat.legacy_functions)
        if chat.stream:
            return StreamingResponse(
                _sse(client, chat, writer), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        async with contextlib.aclosing(_generate(client, chat)) as events:
            async for event in events:
                writer.add(event)
        if writer.done is not None and writer.done.finish_reason == "error":
            return JSONResponse(error_body(writer.done.error or "The model failed.", "server_error"), status_code=500)
        return JSONResponse(writer.completion())

    return app


async def _generate(client: Client, chat: ChatRequest) -> AsyncIterator[Event]:
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
            yield _event(error_body(writer.done.error or "The model failed.", "server_error"))
        else:
            yield _event(writer.finish_chunk())
            if chat.include_usage:
                yield _event(writer.usage_chunk())
    except Exception as error:  # headers are sent: the error has to travel in the stream
        yield _event(error_body(f"{type(error).__name__}: {error}", "server_error"))
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

    from glm_client.config import ConfigError
    from glm_client.loader import ModelLoadError, load_client

    try:
        client = load_client(progress=lambda message: print(message, file=sys.stderr, flush=True))
    except (ModelLoadError, ConfigError) as error:
        print(f"The model could not be loaded. {error}", file=sys.stderr)
        return 1
    api_key = os.environ.get(API_KEY_ENV, "").strip() or None
    print(
        f"Serving {client.info.name} at http://{args.host}:{args.port}/v1"
        + (f" (clients must send the {API_KEY_ENV} key)" if api_key else ""),
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(create_app(client, api_key), host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
