"""The API server against hostile requests, over real HTTP on 127.0.0.1.

Host headers (DNS rebinding), non-JSON bodies (CORS simple requests), size limits,
error bodies that name nothing internal, and secrets kept out of reprs. A scripted
model records whether a request reached it; the real model checks forced-call grammars.
"""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from glm_client import ConfigError, Done, LocalClient, Settings, TextDelta, constrained
from glm_client.server import create_app, serve_in_thread
from glm_client.server_request import (
    MAX_BODY_BYTES,
    MAX_ENUM_VALUES,
    MAX_MESSAGES,
    MAX_TOOLS,
    MAX_TOTAL_CHARS,
    RequestLimits,
    pattern_expansion,
)
from glm_client.testing import ScriptedClient

USER = [{"role": "user", "content": "Hi"}]
JSON = {"content-type": "application/json"}


def tool(parameters: dict, name: str = "lookup") -> dict:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def one_string(schema: dict) -> dict:
    return tool({"type": "object", "properties": {"x": schema}, "required": ["x"]})


SERVER_OPTIONS = {"allowed_hosts": ("api.example.com", "*.lan")}


class FailingClient(ScriptedClient):
    """A model whose generation raises with internal details in the message."""

    def stream(self, messages, tools=None, *, cancel=None, **params):
        self.requests.append((messages, tools, params))
        raise RuntimeError("cannot open /srv/secret/weights.bin (password=hunter2)")
        yield  # a generator, like every client's stream


def post(url: str, body: object, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**JSON, **kwargs.pop("headers", {})}
    kwargs.setdefault("timeout", 60)
    return httpx.post(url + "/v1/chat/completions", content=content, headers=headers, **kwargs)


def assert_error(response: httpx.Response, status: int, words: str, param: str | None = "any") -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and words in error["message"], error
    assert param == "any" or error["param"] == param
    return error


# --- Host header ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "lan", ""])
def test_an_unknown_host_header_is_refused_on_every_route(server, host):
    client, url = server
    for response in (
        httpx.get(url + "/health", headers={"Host": host}),
        httpx.get(url + "/v1/models", headers={"Host": host}),
        post(url, {"messages": USER}, headers={"Host": host}),
    ):
        error = assert_error(response, 400, "is not allowed", None)
        assert error["code"] == "invalid_host"
    assert client.requests == []  # a rebound page never reaches the model


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:8000", "127.0.0.1:1", "[::1]:8000", "LOCALHOST", "api.example.com", "x.lan:80"]
)
def test_loopback_and_allowed_hosts_are_answered(server, host):
    client, url = server
    client.queue("ok")
    assert httpx.get(url + "/health", headers={"Host": host}).status_code == 200
    response = post(url, {"messages": USER}, headers={"Host": host})
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"


def test_allowed_hosts_come_from_the_environment():
    settings = Settings.from_env({"ALLOWED_HOSTS": " API.example.com, *.lan ,10.0.0.5,"})
    assert settings.allowed_hosts == ("api.example.com", "*.lan", "10.0.0.5")
    assert Settings.from_env({}).allowed_hosts == ()
    for bad in ("http://api.example.com", "api.example.com:8000", "api.example.com/v1"):
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({"ALLOWED_HOSTS": bad})
        assert str(caught.value) == (
            f"ALLOWED_HOSTS={bad!r} is not valid; use comma-separated host names such as "
            "api.example.com or *.example.com, without scheme, port or path."
        )


# --- content type --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
def test_a_post_that_is_not_json_is_refused_before_the_model_runs(server, content_type):
    """A page on any site may POST text/plain without a CORS preflight: it must not start a generation."""
    client, url = server
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(url + "/v1/chat/completions", content=json.dumps({"messages": USER}), headers=headers)
    error = assert_error(response, 415, "Content-Type: application/json", None)
    assert error["code"] == "unsupported_media_type" and client.requests == []


def test_json_with_a_charset_is_accepted(server):
    client, url = server
    client.queue("ok")
    response = post(url, {"messages": USER}, headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200


# --- size limits ---------------------------------------------------------------------------


def test_a_body_over_the_limit_is_refused_from_its_content_length(server):
    client, url = server
    body = json.dumps({"messages": [{"role": "user", "content": "x" * (MAX_BODY_BYTES + 10)}]}).encode()
    started = time.perf_counter()
    response = post(url, body)
    assert_error(response, 413, f"limit of {MAX_BODY_BYTES} bytes", None)
    assert time.perf_counter() - started < 10 and client.requests == []


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    """No Content-Length to check: the stream is counted as it arrives, and reading stops at the limit."""
    client, url = server
    sent = 0

    def chunks():
        nonlocal sent
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(4 * MAX_BODY_BYTES // 65536):
            sent += 65536
            yield b"x" * 65536
        yield b'"}]}'

    try:
        response = httpx.post(url + "/v1/chat/completions", content=chunks(), headers=JSON, timeout=60)
    except httpx.HTTPError:  # the server may answer and close before the upload ends
        response = None
    if response is not None:
        assert_error(response, 413, "larger than this server's limit", None)
    assert client.requests == []


def test_the_largest_allowed_body_is_answered(server):
    client, url = server
    client.queue("ok")
    text = "word " * ((MAX_TOTAL_CHARS - 10) // 5)
    response = post(url, {"messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200 and len(client.requests[0][0][0].content) == len(text)


@pytest.mark.parametrize(
    ("body", "status", "param", "words"),
    [
        ({"messages": USER * (MAX_MESSAGES + 1)}, 413, "messages", f"limit of {MAX_MESSAGES}"),
        (
            {"messages": [{"role": "user", "content": "x" * 600_000}, {"role": "user", "content": "y" * 600_000}]},
            413,
            "messages",
            f"limit of {MAX_TOTAL_CHARS}",
        ),
        (
            {"messages": USER, "tools": [one_string({"type": "string"}) for _ in range(MAX_TOOLS + 1)]},
            413,
            "tools",
            f"limit of {MAX_TOOLS}",
        ),
        (
            {"messages": USER, "tools": [tool({"type": "object", "description": "d" * 250_000})]},
            413,
            "tools",
            "characters of JSON",
        ),
        (
            {"messages": USER, "tools": [one_string({"type": "string", "pattern": "^a{40000}$"})]},
            400,
            "tools[0]",
            "expand to 40000 characters",
        ),
        (
            {"messages": USER, "tools": [one_string({"type": "string", "pattern": "^(a{200}){200}$"})]},
            400,
            "tools[0]",
            "expand to 40000 characters",
        ),
        (
            {"messages": USER, "tools": [one_string({"enum": [f"v{i}" for i in range(5_000)]})]},
            413,
            "tools[0]",
            f"limit of {MAX_ENUM_VALUES} enum values",
        ),
        (
            {"messages": USER, "functions": [{"name": "f", "parameters": {"enum": list(range(MAX_ENUM_VALUES + 1))}}]},
            413,
            "functions[0]",
            "enum values",
        ),
    ],
    ids=["messages", "characters", "tools", "schema-size", "pattern", "nested-pattern", "enum", "legacy-enum"],
)
def test_requests_over_a_limit_get_an_openai_error_quickly(server, body, status, param, words):
    client, url = server
    started = time.perf_counter()
    response = post(url, body)
    assert_error(response, status, words, param)
    assert time.perf_counter() - started < 10 and client.requests == []


def test_schemas_nested_too_deeply_are_refused(server):
    client, url = server
    schema: dict = {"type": "string"}
    for _ in range(100):
        schema = {"type": "array", "items": schema}
    assert_error(post(url, {"messages": USER, "tools": [one_string(schema)]}), 400, "nests deeper", "tools[0]")
    assert_error(post(url, b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400, "nested too deeply")
    assert client.requests == []


def test_requests_just_within_the_limits_reach_the_model(server):
    client, url = server
    client.queue("ok")
    tools = [one_string({"type": "string", "pattern": "^(ab{9}){100}$"})] + [
        one_string({"enum": [f"v{i}" for i in range(MAX_ENUM_VALUES // MAX_TOOLS)]}) for _ in range(MAX_TOOLS - 1)
    ]
    response = post(url, {"messages": USER * MAX_MESSAGES, "tools": tools})
    assert response.status_code == 200, response.text
    messages, offered, _ = client.requests[0]
    assert len(messages) == MAX_MESSAGES and len(offered) == MAX_TOOLS


def test_limits_can_be_set_per_server():
    client = ScriptedClient(["ok"])
    with serve_in_thread(create_app(client, limits=RequestLimits(max_messages=2, max_body_bytes=200))) as url:
        assert_error(post(url, {"messages": USER * 3}), 413, "limit of 2", "messages")
        assert_error(post(url, {"messages": [{"role": "user", "content": "x" * 300}]}), 413, "limit of 200 bytes")
        assert post(url, {"messages": USER * 2}).status_code == 200


@pytest.mark.parametrize(
    ("pattern", "size"),
    [("^a{40000}$", 40000), ("abc", 3), ("^[a-z]{5}$", 5), ("^(ab{20}){20}$", 420), (r"^[\]{]{3}$", 3), ("a{2,}", 2)],
)
def test_pattern_expansion_counts_counted_repetitions(pattern, size):
    assert pattern_expansion(pattern) == size


# --- error bodies --------------------------------------------------------------------------


def test_a_crash_is_a_generic_500_with_the_details_only_in_the_log(caplog):
    client = FailingClient()
    with caplog.at_level(logging.ERROR, logger="glm_client.server"), serve_in_thread(create_app(client)) as url:
        response = post(url, {"messages": USER})
        body = {"messages": USER, "stream": True}
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as streamed:
            lines = [line for line in streamed.iter_lines() if line]
    error = assert_error(response, 500, "internal error", None)
    assert error["type"] == "server_error"
    assert "hunter2" not in response.text and "/srv/secret" not in response.text
    assert lines[-1] == "data: [DONE]" and "internal error" in lines[-2]
    assert not any("hunter2" in line or "RuntimeError" in line for line in lines)
    assert "hunter2" in caplog.text and len(client.requests) == 2


def test_a_model_error_event_is_generic_too(server, caplog):
    client, url = server
    client.queue([TextDelta("Half"), Done("error", error="OSError: /srv/models/x.gguf: disk failure")])
    with caplog.at_level(logging.ERROR, logger="glm_client.server"):
        response = post(url, {"messages": USER})
    assert_error(response, 500, "internal error", None)
    assert "/srv/models" not in response.text and "/srv/models" in caplog.text


# --- secrets in reprs ----------------------------------------------------------------------


def test_settings_never_show_the_database_url_or_passwords():
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql://app:pg-s3cret@db/app", "APP_PASSWORD": "pw-s3cret", "OPENAI_API_KEY": "sk-1"}
    )
    assert settings.database_url == "postgresql://app:pg-s3cret@db/app"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings) and "sk-1" not in repr(settings)


# --- forced-call grammars (the real model) -------------------------------------------------


@pytest.fixture(scope="module")
def grammar_server(embedded_client):
    """The real model with the limits lifted, so only the grammar compiler stands between a schema and a hang."""
    local = LocalClient(embedded_client.engine, embedded_client.dialect)  # its own grammars and worker
    limits = RequestLimits(max_pattern_expansion=10**9, max_enum_values=10**9)
    with serve_in_thread(create_app(local, limits=limits)) as url:
        yield url


@pytest.mark.model
def test_a_grammar_over_its_time_budget_fails_cleanly_with_a_400(grammar_server, monkeypatch):
    monkeypatch.setattr(constrained, "COMPILE_BUDGET_S", 3.0)
    body = {
        "messages": USER,
        "tools": [one_string({"type": "string", "pattern": "^a{40000}$"})],  # did not finish in 5 minutes
        "tool_choice": "required",
        "max_tokens": 8,
    }
    started = time.perf_counter()
    response = post(grammar_server, body, timeout=180)
    elapsed = time.perf_counter() - started
    error = assert_error(response, 400, "took longer than 3 s to build", "tools")
    assert error["message"].startswith(constrained.GRAMMAR_ERROR_PREFIX)
    assert elapsed < 120, f"{elapsed:.0f} s"  # the worker's start (seconds) plus the 3 s budget
    # The killed worker is replaced: the next forced call works.
    ok = {**body, "tools": [one_string({"type": "string", "enum": ["Paris", "Oslo"]})]}
    completion = post(grammar_server, ok, timeout=180)
    assert completion.status_code == 200 and completion.json()["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.model
def test_a_schema_xgrammar_refuses_is_a_400_not_a_500(grammar_server):
    body = {
        "messages": USER,
        "tools": [one_string({"type": "string", "pattern": "^a{300}$"})],
        "tool_choice": "required",
        "max_tokens": 8,
    }
    error = assert_error(post(grammar_server, body, timeout=180), 400, "could not be built", "tools")
    assert error["message"].startswith(constrained.GRAMMAR_ERROR_PREFIX)


@pytest.mark.model
def test_a_too_long_last_message_is_a_400_that_says_so(grammar_server, embedded_client):
    words = "hello " * (embedded_client.info.context_length * 2)
    body = {"messages": [{"role": "user", "content": words}], "max_tokens": 4}
    assert_error(post(grammar_server, body, timeout=180), 400, "The last message is too long", "messages")


def test_the_generation_params_of_a_forced_call_are_unchanged_by_the_checks(server):
    """The limits only read the tools: what reaches the model is the request as sent."""
    client, url = server
    client.queue("ok")
    tools = [one_string({"type": "string", "pattern": "^[A-Z]{3}$"})]
    post(url, {"messages": USER, "tools": tools, "tool_choice": "required", "temperature": 0})
    _, offered, params = client.requests[0]
    assert offered == tools and params == {"temperature": 0.0, "force_tool": "any"}
