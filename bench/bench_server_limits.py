"""What the API server's largest allowed requests cost: time and peak memory, on the embedded model.

    .venv/bin/python bench/bench_server_limits.py

Each request goes over real HTTP to the server on 127.0.0.1 (one uvicorn thread in
this process) at a limit of glm_client/server_request.py, with max_tokens 1-16 so the
figures are the request's own cost (reading, checking, trimming, prompt, grammar),
not a long reply. Peak RSS is sampled every 10 ms over this process and its children
(the grammar worker); "+RSS" is the peak over the RSS just before the request.
Over-limit requests are timed too: they should be refused in milliseconds. A request
that fills the context is dominated by the prompt's prefill, which any full-context
request costs; the line before the table times the request path without it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from glm_client import Settings, load_client
from glm_client.server import create_app, serve_in_thread
from glm_client.server_request import (
    MAX_BODY_BYTES,
    MAX_ENUM_VALUES,
    MAX_MESSAGES,
    MAX_PATTERN_EXPANSION,
    MAX_TOOLS,
    MAX_TOOLS_JSON_CHARS,
    MAX_TOTAL_CHARS,
    parse_chat_request,
)


class PeakRss:
    """Samples the RSS of this process and its children until stopped; `peak` in bytes."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        total = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self.peak = self.now()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.now())


def history(messages: int, chars: int) -> list[dict[str, str]]:
    """`messages` alternating user/assistant messages of `chars` characters in all, ending with a user one."""
    each = chars // messages
    text = ("The quick brown fox jumps over the lazy dog. " * (each // 45 + 1))[:each]
    roles = ["user" if (messages - 1 - index) % 2 == 0 else "assistant" for index in range(messages)]
    return [{"role": role, "content": text} for role in roles]


def string_tool(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    function = {
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": {"x": schema}, "required": ["x"]},
    }
    return {"type": "function", "function": function}


def max_tools() -> list[dict[str, Any]]:
    """MAX_TOOLS tools whose JSON is just under MAX_TOOLS_JSON_CHARS."""
    tools = [string_tool(f"tool_{index}", {"type": "string"}) for index in range(MAX_TOOLS)]
    spare = MAX_TOOLS_JSON_CHARS - len(json.dumps(tools, separators=(",", ":"))) - 100
    for tool in tools:
        tool["function"]["description"] = "d" * (spare // MAX_TOOLS)
    return tools


USER = [{"role": "user", "content": "What's the weather in Paris?"}]


def cases() -> list[tuple[str, Callable[[], bytes]]]:
    forced = {"tool_choice": "required", "temperature": 0, "max_tokens": 16}
    enum_tool = string_tool("pick", {"type": "string", "enum": [f"value-{i}" for i in range(MAX_ENUM_VALUES)]})
    repeat = MAX_PATTERN_EXPANSION // 10
    pattern_tool = string_tool("code", {"type": "string", "pattern": f"^(ab{{9}}){{{repeat}}}$"})

    def body(data: dict[str, Any]) -> Callable[[], bytes]:
        return lambda: json.dumps(data).encode()

    return [
        ("small request (baseline)", body({"messages": USER, "max_tokens": 1})),
        (
            f"{MAX_MESSAGES} messages, {MAX_TOTAL_CHARS:,} chars",
            body({"messages": history(MAX_MESSAGES, MAX_TOTAL_CHARS), "max_tokens": 1}),
        ),
        (
            f"{MAX_TOOLS} tools, {MAX_TOOLS_JSON_CHARS:,} chars JSON, auto",
            body({"messages": USER, "tools": max_tools(), "max_tokens": 1}),
        ),
        (
            f"{MAX_TOOLS} tools, {MAX_TOOLS_JSON_CHARS:,} chars JSON, forced",
            body({"messages": USER, "tools": max_tools(), **forced}),
        ),
        (f"enum of {MAX_ENUM_VALUES} values, forced", body({"messages": USER, "tools": [enum_tool], **forced})),
        (
            f"pattern expanding to {MAX_PATTERN_EXPANSION}, forced",
            body({"messages": USER, "tools": [pattern_tool], **forced}),
        ),
        (
            "over limit: 15 MB body",
            lambda: json.dumps({"messages": [{"role": "user", "content": "x" * 15_000_000}]}).encode(),
        ),
        (
            "over limit: pattern ^a{40000}$",
            body({"messages": USER, "tools": [string_tool("a", {"pattern": "^a{40000}$"})]}),
        ),
    ]


def main() -> int:
    print("Loading the embedded model...", file=sys.stderr, flush=True)
    client = load_client(Settings.from_env())
    print(f"model: {client.info.name}, context {client.info.context_length} tokens; body limit {MAX_BODY_BYTES:,} B")
    # The request path without the model's forward: parsing, checking and trimming the largest history.
    largest = json.dumps({"messages": history(MAX_MESSAGES, MAX_TOTAL_CHARS)}).encode()
    started = time.perf_counter()
    chat = parse_chat_request(largest)
    parsed = time.perf_counter() - started
    prompt, dropped = client.fit_context(chat.messages, None, 1)
    print(
        f"largest history: parse+check {parsed:.2f} s, fit_context {time.perf_counter() - started - parsed:.2f} s "
        f"({dropped} of {MAX_MESSAGES} messages dropped, {len(prompt)}-token prompt)"
    )
    with serve_in_thread(create_app(client)) as url, httpx.Client(timeout=600) as http:
        # Warm up: the first forced call starts the grammar worker and indexes the vocabulary.
        http.post(url + "/v1/chat/completions", json={"messages": USER, "max_tokens": 1})
        warm_tool = string_tool("warm", {"type": "integer"})
        http.post(
            url + "/v1/chat/completions",
            json={"messages": USER, "tools": [warm_tool], "tool_choice": "required", "max_tokens": 4},
        )
        print(f"{'request':<48} {'status':>6} {'body':>10} {'seconds':>8} {'peak RSS':>9} {'+RSS':>8}")
        for name, make in cases():
            content = make()
            with PeakRss() as rss:
                before = rss.now()
                started = time.perf_counter()
                response = http.post(
                    url + "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
                )
                elapsed = time.perf_counter() - started
            note = "" if response.status_code == 200 else "  " + response.json()["error"]["message"][:70]
            print(
                f"{name:<48} {response.status_code:>6} {len(content) / 1e6:>8.2f}MB {elapsed:>8.2f} "
                f"{rss.peak / 2**20:>7.0f}MB {(rss.peak - before) / 2**20:>6.0f}MB{note}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
