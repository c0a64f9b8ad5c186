"""Faults injected while turns are in flight: what was kept, what was lost, how long recovery took.

    .venv/bin/python bench/bench_faults.py [--only NAME ...] [--pace 0.02]

NAME is one of: sigkill, postgres, disk_full, kernel, mcp, openai (default: all, in that order).

Everything is real except the model: the app (`streamlit run app.py` on a free port of
127.0.0.1, driven by headless Chromium), its SQLite or PostgreSQL store, its Jupyter
kernels, MCP servers (tests/mcp_test_servers.py) and the project's own API server. The
model is a scripted one served by that API server in a process of its own, so that it can
be killed too, streaming numbered words ("w0 w1 …", one word one token) `--pace` seconds
apart: "in flight" is then a fact, and what was lost can be counted in words.

- sigkill: two conversations (Chat, Tool) stream; the app is SIGKILLed and started again;
  each conversation is opened again from its URL. Lost = words shown before the kill that
  the reopened conversation lacks.
- postgres: a throwaway PostgreSQL cluster (tests/postgres_cluster.py, fsync on) is the
  store (DATABASE_URL); it is restarted (pg_ctl restart -m fast) mid-reply.
- disk_full: DATA_DIR is a small tmpfs, filled up mid-reply by a file, which is deleted
  again; the database is checked with PRAGMA integrity_check.
- kernel: a Code Interpreter cell prints a line every 0.2 s (and appends it to a file);
  its ipykernel process is SIGKILLed from outside; the next cell must work, and no kernel
  process may be left over.
- mcp: an MCP tool call (`sleep`) is in flight when its server process is SIGKILLed,
  over Streamable HTTP (then a supervisor starts it again) and over stdio; the next call
  must work. Driven through the agent loop (run_turn), as the Tool page drives it.
- openai: the API server behind OPENAI_BASE_URL is SIGKILLed mid-reply, then started again.

Target: every fault survived with at most the in-flight token (here: one word) lost.
Needs root for the tmpfs mount, Debian's chromium, and postgresql's server binaries;
a fault whose prerequisite is missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from glm_client import INTERPRETER, Message, TextDelta, ToolCall  # noqa: E402
from glm_client.events import Event  # noqa: E402
from glm_client.testing import ScriptedClient  # noqa: E402
from tests.postgres_cluster import PostgresCluster, PostgresUnavailable  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, free_port, wait_for  # noqa: E402

MCP_TEST_SERVERS = ROOT / "tests" / "mcp_test_servers.py"
SQLITE_FILE = "conversations.sqlite3"
CURSOR = "▌"
WORD = re.compile(r"\bw(\d+)\b")
P = TypeVar("P", bound="Process")
FAULTS = ("sigkill", "postgres", "disk_full", "kernel", "mcp", "openai")

# A cell that runs for 20 s, leaving a trace of each step both in its output and in a file the
# bench can read from outside, so output lost with the kernel can be counted.
TICKING_CELL = (
    "import time\n"
    "for i in range(100):\n"
    "    print('tick', i, flush=True)\n"
    "    with open('ticks.txt', 'a') as f:\n"
    "        f.write(f'{i}\\n')\n"
    "    time.sleep(0.2)\n"
)


# --- the scripted model and its server process ------------------------------------------------


class FaultModel(ScriptedClient):
    """A model whose reply depends only on the last message, so a restarted server answers alike.

    "STORY n": n numbered words, one event each, `pace` s apart, then "The end.";
    "RUN\\n<code>": a Code Interpreter call of that code; after a tool result: "Result: <its first
    line>"; anything else: "OK: <the message>".
    """

    def __init__(self, pace: float) -> None:
        super().__init__()
        self.pace = pace

    def stream(
        self, messages: list[Message], tools: Any = None, *, cancel: Any = None, **params: Any
    ) -> Iterator[Event]:
        last = messages[-1]
        reply: str | list[Event | ToolCall]
        if last.role != "user":
            reply = "Result: " + (last.content.strip().splitlines() or [""])[0][:200]
        elif last.content.startswith("STORY "):
            reply = [TextDelta(f"w{i} ") for i in range(int(last.content.split()[1]))] + [TextDelta("The end.")]
        elif last.content.startswith("RUN\n"):
            reply = [ToolCall(INTERPRETER, {"code": last.content[4:]})]
        else:
            reply = f"OK: {last.content}"
        self.replies = [reply]
        self.requests.clear()  # nothing reads them; a long run must not grow
        for event in super().stream(messages, tools, cancel=cancel, **params):
            if isinstance(event, TextDelta):
                time.sleep(self.pace)
            yield event


def serve_model(port: int, pace: float) -> None:
    """The body of the model server process (`--serve-model PORT`)."""
    import uvicorn

    from glm_client.server import create_app

    uvicorn.run(create_app(FaultModel(pace)), host="127.0.0.1", port=port, log_level="warning")


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.1) -> Any:
    """Poll `condition` until it is truthy (and return that value); TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(step_s)


class Process:
    """A child process started again on demand with the same command (a supervisor's job)."""

    def __init__(self, command: list[str], ready_url: str | None = None, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.ready_url = ready_url
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    log: Path | None = None  # where its output goes (appended), for a post-mortem

    def start(self) -> Process:
        output = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=self.env, stdout=output, stderr=output)
        if self.log is not None:
            output.close()  # type: ignore[union-attr]
        if self.ready_url:
            wait_for(self.ready_url, timeout=120)
        return self

    def kill(self) -> None:
        """SIGKILL: no finally, no atexit, no clean close."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


class ModelServer(Process):
    """The scripted model behind the project's API server, in a process of its own (so it can be killed)."""

    def __init__(self, pace: float, port: int | None = None) -> None:
        port = port or free_port()
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-model", str(port), "--pace", str(pace)]
        super().__init__(command, ready_url=f"http://127.0.0.1:{port}/health")
        self.base_url = f"http://127.0.0.1:{port}/v1"


class App(Process):
    """`streamlit run app.py` on a free port of 127.0.0.1 (a new one at each start), like tests/test_browser.py."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir = data_dir
        drop = ("MODEL_PATH", "OPENAI_BASE_URL", "APP_PASSWORD", "DATABASE_URL", "MCP_CONFIG")
        full_env = {k: v for k, v in os.environ.items() if k not in drop}
        full_env.update({"DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", **env})
        super().__init__([], env=full_env)
        self.port = 0
        self.log = data_dir.parent / f"{data_dir.name}-app.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> App:
        self.port = free_port()
        self.command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port)]
        self.ready_url = f"{self.url}/_stcore/health"
        super().start()
        return self

    def at(self, url: str) -> str:
        """The same page and conversation on this app's current port."""
        return re.sub(r"^http://127\.0\.0\.1:\d+", self.url, url)

    def descendants(self) -> list[Any]:
        import psutil

        if self.process is None:
            return []
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def kernel_processes(app: App) -> list[Any]:
    """The app's ipykernel processes, and (sandboxed) the bwrap processes around them: the app's descendants."""
    found = []
    for process in app.descendants():
        with contextlib.suppress(Exception):
            if "ipykernel_launcher" in process.cmdline():
                found.append(process)
    return found


def kernels_only(processes: list[Any]) -> list[Any]:
    """The kernels themselves: the python running ipykernel_launcher, not bwrap's command line naming it."""
    return [process for process in processes if process.cmdline()[1:3] == ["-m", "ipykernel_launcher"]]


# --- reading the page and the store -----------------------------------------------------------


def words(text: str) -> list[int]:
    return [int(number) for number in WORD.findall(text)]


def count_words(text: str) -> int:
    """How many of the story's words `text` holds from its start: w0, w1, … without a gap."""
    numbers = words(text)
    count = 0
    while count < len(numbers) and numbers[count] == count:
        count += 1
    return count


def send(page: Any, text: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.wait_for()
    box.fill(text)
    box.press("Enter")


def last_reply(page: Any) -> str:
    """The text of the last bubble's first Markdown block (the reply being streamed, or drawn)."""
    try:
        bubbles = page.get_by_test_id("stChatMessage")
        if bubbles.count() < 2:
            return ""
        blocks = bubbles.last.get_by_test_id("stMarkdownContainer")
        return blocks.first.inner_text(timeout=2000).replace(CURSOR, "") if blocks.count() else ""
    except Exception:  # redrawn while read
        return ""


def shown_words(page: Any) -> int:
    return count_words(last_reply(page))


def alerts(page: Any) -> list[str]:
    """Every error, warning or exception box and every toast the page shows, as text."""
    try:
        boxes = page.locator("[data-testid='stAlert'], [data-testid='stException'], [data-testid='stToast']")
        return [" ".join(text.split()) for text in boxes.all_inner_texts()]
    except Exception:
        return []


def watch(page: Any, seconds: float, seen: list[str] | None = None) -> list[str]:
    """Every box and toast the page shows during `seconds` (a toast goes away again), in order."""
    seen = [] if seen is None else seen
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen += [box for box in alerts(page) if box not in seen]
        time.sleep(0.2)
    return seen


def page_text(page: Any) -> str:
    """All text of the page, collapsed expanders included."""
    try:
        return page.locator("body").text_content(timeout=5000) or ""
    except Exception:
        return ""


def is_idle(page: Any) -> bool:
    try:
        return page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").count() > 0
    except Exception:
        return False


def streaming(page: Any) -> bool:
    return page.get_by_role("button", name="⏹ Stop").count() > 0


def conversation_id(page: Any) -> str | None:
    found = re.search(r"[?&]c=([0-9a-f]{32})", page.url)
    return found.group(1) if found else None


def stored(data_dir: Path, conversation: str, database_url: str | None = None) -> list[Message]:
    """The conversation's messages as the store has them, read without writing anything."""
    if database_url:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT body FROM messages WHERE conversation_id = %s ORDER BY position", (conversation,)
            ).fetchall()
    else:
        # Read-only: on a full disk opening the store (which runs its schema in a write transaction) could fail.
        path = data_dir / SQLITE_FILE
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as connection:
            rows = connection.execute(
                "SELECT body FROM messages WHERE conversation_id = ? ORDER BY position", (conversation,)
            ).fetchall()
    return [Message.from_dict({k: v for k, v in json.loads(body).items() if k != "image_digests"}) for (body,) in rows]


def stored_reply_words(data_dir: Path, conversation: str, database_url: str | None = None) -> int:
    messages = stored(data_dir, conversation, database_url)
    replies = [m for m in messages if m.role == "assistant" and words(m.content)]
    return count_words(replies[-1].content) if replies else 0


def integrity(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as connection:
        return "; ".join(row[0] for row in connection.execute("PRAGMA integrity_check").fetchall())


# --- results ----------------------------------------------------------------------------------


class Skip(Exception):
    """A prerequisite of a fault is missing here."""


@dataclass
class Result:
    name: str
    title: str
    kept: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    lost_tokens: int = 0  # the most tokens (words) lost by any one turn
    recovery_s: float | None = None
    recovery_what: str = ""
    checks: list[tuple[bool, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str = ""
    error: str = ""

    def check(self, ok: bool, what: str) -> bool:
        self.checks.append((bool(ok), what))
        return bool(ok)

    @property
    def survived(self) -> bool:
        return not self.error and not self.skipped and all(ok for ok, _ in self.checks) and self.lost_tokens <= 1

    def verdict(self) -> str:
        if self.skipped:
            return f"skipped ({self.skipped})"
        return "survived" if self.survived else "NOT survived"

    def print(self) -> None:
        print(f"\n== {self.name}: {self.title}")
        if self.skipped:
            print(f"  skipped:  {self.skipped}")
            return
        for line in self.kept:
            print(f"  kept:     {line}")
        for line in self.lost:
            print(f"  lost:     {line}")
        if self.recovery_s is not None:
            print(f"  recovery: {self.recovery_s:.1f} s ({self.recovery_what})")
        for ok, what in self.checks:
            print(f"  {'ok  ' if ok else 'FAIL'}      {what}")
        for note in self.notes:
            print(f"  note:     {note}")
        if self.error:
            print(f"  error:    {self.error}")
        print(f"  verdict:  {self.verdict()} (at most {self.lost_tokens} token(s) lost by a turn)")


class Bench:
    """What the faults share: a browser, a scratch folder, the model's pace."""

    def __init__(self, pace: float, root: Path, browser: Any, shots: Path | None) -> None:
        self.pace = pace
        self.root = root
        self.browser = browser
        self.shots = shots
        self.pages: list[Any] = []  # the current fault's pages, for a post-mortem

    def post_mortem(self, name: str) -> list[str]:
        """What each page of a fault that went wrong showed (and a screenshot, with --shots)."""
        lines = []
        for index, page in enumerate(self.pages):
            with contextlib.suppress(Exception):
                lines.append(f"page {index} ({page.url}): reply {last_reply(page)[-120:]!r}; boxes {alerts(page)}")
                if self.shots is not None:
                    self.shots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(self.shots / f"{name}-{index}.png"), full_page=True)
        self.pages = []
        return lines

    def page(self, stack: contextlib.ExitStack) -> Any:
        if self.browser is None:
            raise Skip("Debian's chromium or the playwright package is missing")
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})
        stack.callback(context.close)
        page = context.new_page()
        page.set_default_timeout(60_000)
        self.pages.append(page)
        return page

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def start_story(page: Any, url: str, words_: int) -> None:
    page.goto(url)
    send(page, f"STORY {words_}")


def story_words(seconds: float, pace: float) -> int:
    """A story long enough to be still streaming `seconds` from now."""
    return int(seconds / pace)


# --- the faults -------------------------------------------------------------------------------


def fault_sigkill(bench: Bench, result: Result, stack: contextlib.ExitStack) -> None:
    data = bench.folder("sigkill")
    model = stack.enter_context(running(ModelServer(bench.pace)))
    app = stack.enter_context(running(App(data, {"OPENAI_BASE_URL": model.base_url})))
    pages = {"chat": bench.page(stack), "tool": bench.page(stack)}
    for mode, page in pages.items():
        start_story(page, f"{app.url}/{'' if mode == 'chat' else mode}", story_words(120, bench.pace))
    for mode, page in pages.items():
        wait_until(lambda p=page: shown_words(p) >= 40 and conversation_id(p), 60, f"the {mode} reply to stream")
    urls = {mode: page.url for mode, page in pages.items()}
    shown = {mode: shown_words(page) for mode, page in pages.items()}
    app.kill()
    killed = time.monotonic()
    result.check(app.process is not None and app.process.returncode == -signal.SIGKILL, "the app died of SIGKILL")
    result.notes.append(f"killed with {', '.join(f'{m}: {n} words shown' for m, n in shown.items())}")

    app.start()
    reopened: dict[str, int] = {}
    for mode, page in pages.items():
        page.goto(app.at(urls[mode]))
        wait_until(lambda p=page: shown_words(p) > 0, 60, f"the {mode} conversation to be drawn again")
        page.get_by_text("Stopped before the reply was finished.").first.wait_for(timeout=30_000)
        reopened[mode] = shown_words(page)
    result.recovery_s = time.monotonic() - killed
    result.recovery_what = "kill → restart → both conversations drawn again from their URLs"

    for mode in pages:
        cid = urls[mode].split("c=")[1][:32]
        messages = stored(data, cid)
        reply = messages[-1]
        kept = count_words(reply.content)
        lost = max(0, shown[mode] - kept)
        result.lost_tokens = max(result.lost_tokens, lost)
        result.kept.append(
            f"{mode}: {kept} words stored (the page showed {shown[mode]}), reopened showing {reopened[mode]}"
        )
        result.lost.append(f"{mode}: {lost} word(s) shown before the kill and missing after it")
        result.check(
            [m.role for m in messages] == ["system", "user", "assistant"], f"{mode}: system, user, reply stored"
        )
        result.check(reply.meta.get("interrupted") is True, f"{mode}: the partial reply is marked interrupted")
        result.check(reopened[mode] == kept, f"{mode}: the reopened page shows what is stored")

    # The restarted app goes on: a new message in the reopened conversation is answered and saved after it.
    page = pages["chat"]
    send(page, "hello again")
    page.get_by_text("OK: hello again").first.wait_for()
    cid = urls["chat"].split("c=")[1][:32]
    wait_until(lambda: len(stored(data, cid)) == 5, 20, "the new turn to be stored")
    roles = [m.role for m in stored(data, cid)]
    result.check(roles == ["system", "user", "assistant", "user", "assistant"], "the next turn is saved after it")


def fault_postgres(bench: Bench, result: Result, stack: contextlib.ExitStack) -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise Skip("the psycopg package is not installed") from None
    try:
        server = PostgresCluster(durable=True)  # fsync on: a restart should be a real one
    except PostgresUnavailable as reason:
        raise Skip(str(reason)) from None
    stack.callback(server.stop)
    data = bench.folder("postgres")
    model = stack.enter_context(running(ModelServer(bench.pace)))
    env = {"OPENAI_BASE_URL": model.base_url, "DATABASE_URL": server.url()}
    app = stack.enter_context(running(App(data, env)))
    page = bench.page(stack)
    total = story_words(12, bench.pace)  # still streaming when the restart is done, finished soon after
    start_story(page, app.url, total)
    wait_until(lambda: shown_words(page) >= 40 and conversation_id(page), 60, "the reply to stream")
    cid = conversation_id(page)
    assert cid is not None
    before = shown_words(page)
    started = time.monotonic()
    server.restart()
    restarted = time.monotonic()
    stored_then = stored_reply_words(data, cid, server.url())
    resumed = None
    with contextlib.suppress(TimeoutError):
        resumed = wait_until(lambda: stored_reply_words(data, cid, server.url()) > stored_then, 20, "a save", 0.05)
    result.recovery_s = time.monotonic() - started
    result.recovery_what = "restart begins → the reply's next draft saved"
    result.check(resumed, "saving resumes after the restart (the stored reply grows)")
    result.notes.append(
        f"restart took {restarted - started:.1f} s; the page showed {before} words before it, "
        f"{shown_words(page)} after it"
    )
    # The turn ends: finished, or stopped with a message. Either way the page settles.
    seen: list[str] = []
    wait_until(lambda: watch(page, 0, seen) is not None and not streaming(page) and is_idle(page), 90, "the turn end")
    end_text = last_reply(page)
    final = count_words(end_text)
    finished = "The end." in end_text
    watch(page, 0, seen)
    result.notes.append(f"the page ended the turn with {final} of {total} words; boxes and toasts: {seen or 'none'}")
    result.check(finished or seen, "the turn finished, or the page said why not")
    result.check(not any("has encountered an error" in box for box in seen), "no unexplained app error")

    send(page, "hello again")
    page.get_by_text("OK: hello again").first.wait_for()
    saved = wait_until(
        lambda: [m.content for m in stored(data, cid, server.url())][-1:] == ["OK: hello again"], 30, "the next turn"
    )
    result.check(saved, "the next turn is saved")

    messages = stored(data, cid, server.url())
    replies = [m for m in messages if m.role == "assistant" and words(m.content)]
    kept = count_words(replies[-1].content) if replies else 0
    lost = max(0, final - kept)
    result.lost_tokens = lost
    result.kept.append(f"{kept} of {total} words stored ({final} shown at the end)")
    result.lost.append(f"{lost} word(s) shown but not stored")
    result.check([m.role for m in messages] == ["system", "user", "assistant", "user", "assistant"], "roles in order")
    if not finished:
        result.check(replies and replies[-1].meta.get("interrupted") is True, "a reply cut short is marked interrupted")


def fault_disk_full(bench: Bench, result: Result, stack: contextlib.ExitStack) -> None:
    if os.geteuid() != 0:
        raise Skip("mounting a tmpfs needs root")
    data = bench.folder("disk_full")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(data)], capture_output=True)
    if mounted.returncode != 0:
        raise Skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    stack.callback(lambda: subprocess.run(["umount", "-l", str(data)], capture_output=True))
    model = stack.enter_context(running(ModelServer(bench.pace)))
    app = stack.enter_context(running(App(data, {"OPENAI_BASE_URL": model.base_url})))
    page = bench.page(stack)
    total = story_words(20, bench.pace)  # still streaming when the space is back
    start_story(page, app.url, total)
    wait_until(lambda: shown_words(page) >= 40 and conversation_id(page), 60, "the reply to stream")
    cid = conversation_id(page)
    assert cid is not None

    filler = data / "filler"
    with filler.open("wb", buffering=0) as out:  # unbuffered: nothing left to flush (and fail) on close
        for block in (65536, 4096, 512):
            with contextlib.suppress(OSError):  # ENOSPC: full, down to the last small block
                while True:
                    out.write(b"\0" * block)
    full_at = time.monotonic()
    stored_at_full = stored_reply_words(data, cid)
    free = shutil.disk_usage(data).free
    result.notes.append(f"filled the 16 MB tmpfs ({free} bytes left) at {shown_words(page)} shown words")
    boxes_full = watch(page, 4)  # the turn runs on a full disk
    shown_full = shown_words(page)
    stored_full = stored_reply_words(data, cid)
    result.notes.append(
        f"4 s on a full disk: page {shown_full} words, store {stored_full} words (was {stored_at_full}); "
        f"boxes: {boxes_full or 'none'}"
    )
    result.check(
        any(re.search(r"\bdisk\b|no space|space left", box, re.I) for box in boxes_full),
        "a clear message about the disk",
    )
    still = wait_until(lambda: shown_words(page) > shown_full or not streaming(page), 10, "the page to move")
    result.check(still and shown_words(page) > shown_full, "the running reply is still shown and growing")

    filler.unlink()
    freed = time.monotonic()
    result.notes.append(f"space back after {freed - full_at:.1f} s")
    resumed = None
    with contextlib.suppress(TimeoutError):
        resumed = wait_until(lambda: stored_reply_words(data, cid) > stored_full, 15, "saving to resume", 0.05)
    result.check(resumed, "saving resumes once space is back (the stored reply grows)")
    result.recovery_s = time.monotonic() - freed if resumed else None
    result.recovery_what = "space freed → the reply's next draft saved"
    result.notes.append(f"after the space came back: {watch(page, 1) or 'no boxes or toasts'}")
    wait_until(lambda: not streaming(page) and is_idle(page), total * bench.pace + 60, "the turn to end")
    final = count_words(last_reply(page))
    send(page, "hello again")
    page.get_by_text("OK: hello again").first.wait_for()
    saved = None
    with contextlib.suppress(TimeoutError):
        saved = wait_until(lambda: [m.content for m in stored(data, cid)][-1:] == ["OK: hello again"], 20, "next turn")
    result.check(saved, "the next turn is saved")

    check = integrity(data / SQLITE_FILE)
    result.check(check == "ok", f"PRAGMA integrity_check: {check}")
    messages = stored(data, cid)
    replies = [m for m in messages if m.role == "assistant" and words(m.content)]
    kept = count_words(replies[-1].content) if replies else 0
    lost = max(0, final - kept)
    result.lost_tokens = lost
    result.kept.append(f"{kept} words stored of {final} shown at the end ({total} in the story)")
    result.lost.append(f"{lost} word(s) shown but not stored")
    result.check(
        [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant"],
        f"roles in order: {[m.role for m in messages]}",
    )


def fault_kernel(bench: Bench, result: Result, stack: contextlib.ExitStack) -> None:
    data = bench.folder("kernel")
    model = stack.enter_context(running(ModelServer(bench.pace)))
    app = stack.enter_context(running(App(data, {"OPENAI_BASE_URL": model.base_url})))
    page = bench.page(stack)
    page.goto(f"{app.url}/code_interpreter")
    send(page, "RUN\n" + TICKING_CELL)
    # The conversation's id from its working directory (the cell writes there), not from the URL.
    ticks = wait_until(lambda: next((data / "workspaces").glob("*/ticks.txt"), None), 60, "the cell to start")
    cid = ticks.parent.name
    wait_until(lambda: len(ticks.read_text().split()) >= 10, 60, "the cell to run")
    before = kernel_processes(app)
    kernels = kernels_only(before)
    result.check(len(kernels) == 1, f"one kernel process before the kill (found {len(kernels)})")
    victim = kernels[-1]
    victim.kill()
    killed = time.monotonic()
    ran = len(ticks.read_text().split())

    page.get_by_text("Result: ").first.wait_for(timeout=60_000)  # the model read the observation and answered
    reported = time.monotonic() - killed
    wait_until(lambda: not streaming(page) and is_idle(page), 30, "the turn to end")
    text = page_text(page)
    result.check("The kernel died" in text, "the page reports that the kernel died")
    result.check(conversation_id(page) == cid, f"the URL names the conversation ({page.url})")
    send(page, "RUN\nprint('alive', 6 * 7)")
    wait_until(lambda: "alive 42" in page_text(page), 60, "the next cell's output")
    result.recovery_s = time.monotonic() - killed
    result.recovery_what = f"kill → the next cell's output shown (the death was reported after {reported:.1f} s)"

    messages = stored(data, cid)
    observations = [m for m in messages if m.role == "observation"]
    first = observations[0].content if observations else ""
    printed = len(re.findall(r"^tick \d+$", first, re.M))
    ran = max(ran, len(ticks.read_text().split()))
    result.lost_tokens = max(0, ran - printed)  # here a "token" is one line of output
    result.kept.append(f"{printed} output lines of the killed cell in its observation; {ran} steps had run")
    result.lost.append(f"{max(0, ran - printed)} output line(s) of steps that ran, and the kernel's variables")
    result.check(len(observations) == 2 and "alive 42" in observations[1].content, "the next cell ran and was stored")
    result.check(
        [m.role for m in messages]
        == ["system", "user", "assistant", "observation", "assistant", "user", "assistant", "observation", "assistant"],
        "the turn and the next are stored in order",
    )
    now = kernel_processes(app)
    result.check(not victim.is_running() or victim.status() == "zombie", "the killed kernel is gone")
    result.check(len(kernels_only(now)) == 1, f"exactly one kernel after recovery (found {len(kernels_only(now))})")
    wrappers = [process for process in before if process.is_running() and process.status() != "zombie"]
    result.check(not wrappers, f"nothing of the killed kernel's sandbox is left ({len(wrappers)} processes)")
    pids = [process.pid for process in now]
    app.stop()
    import psutil

    left = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    result.check(not left, f"no kernel left after the app stops (left: {left or 'none'})")


def fault_mcp(bench: Bench, result: Result, stack: contextlib.ExitStack) -> None:
    import psutil

    from glm_client.agent import run_turn
    from tools.executor import tool_executor
    from tools.mcp_config import ServerConfig
    from tools.mcp_manager import McpServers
    from tools.registry import ToolRegistry

    port = free_port()
    http = Process([sys.executable, str(MCP_TEST_SERVERS), "--port", str(port)])
    http.start()
    stack.callback(http.stop)
    wait_until(lambda: _connects(port), 30, "the MCP server to listen")
    servers = McpServers(ToolRegistry())
    stack.callback(servers.close)
    for config in (
        ServerConfig("h", url=f"http://127.0.0.1:{port}/mcp", timeout=60),
        ServerConfig("s", command=sys.executable, args=[str(MCP_TEST_SERVERS), "--stdio"], timeout=60),
    ):
        status = servers.connect(config)
        if not status.connected:
            raise RuntimeError(f"MCP server {config.name} did not connect: {status}")
    executor = tool_executor(servers.registry, timeout=90)

    def stdio_server() -> Any:
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "--stdio" in child.cmdline() and str(MCP_TEST_SERVERS) in child.cmdline():
                    return child
        return None

    def kill_http() -> None:
        http.kill()

    def kill_stdio() -> None:
        stdio_server().kill()

    for name, transport, kill, revive in (
        ("h", "Streamable HTTP", kill_http, lambda: (http.start(), wait_until(lambda: _connects(port), 30, "MCP"))),
        ("s", "stdio", kill_stdio, lambda: None),
    ):
        model = ScriptedClient(
            [
                [ToolCall(f"{name}__sleep", {"seconds": 30})],
                "I saw the error.",
                [ToolCall(f"{name}__shout", {"text": "back"})],
                "Done.",
            ]
        )
        conversation = [Message.user("Sleep a while")]
        stored_messages: list[tuple[int, Message]] = []
        turn = threading.Thread(
            target=lambda m=model, c=conversation, s=stored_messages: list(
                run_turn(m, c, executor, on_message=lambda i, msg: s.append((i, msg)))
            ),
            daemon=True,
        )
        turn.start()
        wait_until(lambda s=stored_messages: s, 10, "the call to start")
        time.sleep(1.0)  # the call is in flight on the server
        kill()
        killed = time.monotonic()
        turn.join(60)
        failed_after = time.monotonic() - killed
        observation = next((m for _, m in stored_messages if m.role == "observation"), None)
        ok = result.check(
            observation is not None and observation.is_error and not turn.is_alive(),
            f"{transport}: the call in flight ends in an error observation ({failed_after:.1f} s after the kill)",
        )
        if observation is not None:
            result.notes.append(f"{transport}: the observation says {observation.content[:160]!r}")
        if not ok:
            continue
        revive()
        conversation.append(Message.user("Shout"))
        list(run_turn(model, conversation, executor))
        recovered = time.monotonic() - killed
        again = [m for m in conversation if m.role == "observation"][-1]
        result.check(
            not again.is_error and again.content == "BACK", f"{transport}: the next call works: {again.content!r}"
        )
        roles = [m.role for m in conversation]
        result.check(
            roles == ["user", "assistant", "observation", "assistant", "user", "assistant", "observation", "assistant"],
            f"{transport}: every message of both turns kept",
        )
        result.kept.append(
            f"{transport}: the turn went on after the error observation and answered ('I saw the error.')"
        )
        result.lost.append(f"{transport}: the result of the call in flight (it never came)")
        result.recovery_s = max(result.recovery_s or 0.0, recovered)
        result.notes.append(f"{transport}: kill → next call answered in {recovered:.1f} s")
    result.recovery_what = "the slower of the two: kill → the next call answered (HTTP: the server started again first)"


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


def fault_openai(bench: Bench, result: Result, stack: contextlib.ExitStack) -> None:
    data = bench.folder("openai")
    port = free_port()
    model = stack.enter_context(running(ModelServer(bench.pace, port)))
    app = stack.enter_context(running(App(data, {"OPENAI_BASE_URL": model.base_url})))
    page = bench.page(stack)
    start_story(page, app.url, story_words(120, bench.pace))
    wait_until(lambda: shown_words(page) >= 40 and conversation_id(page), 60, "the reply to stream")
    cid = conversation_id(page)
    assert cid is not None
    before = shown_words(page)
    model.kill()
    killed = time.monotonic()
    wait_until(lambda: not streaming(page) and is_idle(page), 60, "the turn to end")
    boxes = alerts(page)
    final = shown_words(page)
    result.notes.append(f"killed at {before} shown words; the page ended with {final}; boxes: {boxes or 'none'}")
    result.check(any("model server" in box for box in boxes), "the page says the model server failed")
    messages = stored(data, cid)
    reply = messages[-1]
    kept = count_words(reply.content)
    lost = max(0, final - kept)
    result.lost_tokens = lost
    result.kept.append(f"{kept} words stored; the page showed {final} at the end ({before} when killed)")
    result.lost.append(f"{lost} word(s) shown but not stored")
    result.check(reply.meta.get("interrupted") is True and reply.meta.get("error"), "the partial reply is marked")

    model.start()
    send(page, "hello again")
    page.get_by_text("OK: hello again").first.wait_for()
    result.recovery_s = time.monotonic() - killed
    result.recovery_what = "kill → server started again → the next reply shown"
    saved = wait_until(lambda: [m.content for m in stored(data, cid)][-1:] == ["OK: hello again"], 20, "next turn")
    result.check(saved, "the next turn is answered and saved")


FAULT_FUNCTIONS: dict[str, tuple[str, Callable[[Bench, Result, contextlib.ExitStack], None]]] = {
    "sigkill": ("the app killed with SIGKILL mid-stream and restarted", fault_sigkill),
    "postgres": ("PostgreSQL restarted mid-turn (DATABASE_URL)", fault_postgres),
    "disk_full": ("the SQLite DATA_DIR on a full filesystem (16 MB tmpfs)", fault_disk_full),
    "kernel": ("the conversation's kernel killed from outside while code runs", fault_kernel),
    "mcp": ("an MCP server killed mid-call (Streamable HTTP and stdio)", fault_mcp),
    "openai": ("the OpenAI-compatible server behind OPENAI_BASE_URL killed mid-reply", fault_openai),
}


@contextlib.contextmanager
def running(process: P) -> Iterator[P]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


def run_fault(bench: Bench, name: str) -> Result:
    title, function = FAULT_FUNCTIONS[name]
    result = Result(name, title)
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as stack:
            try:
                function(bench, result, stack)
            except BaseException:
                result.notes += bench.post_mortem(name)  # before the pages close
                raise
            if not result.survived:
                result.notes += bench.post_mortem(name)
            bench.pages = []
    except Skip as skip:
        result.skipped = str(skip)
    except Exception as error:
        result.error = f"{type(error).__name__}: {error}"
    result.notes.append(f"the whole fault took {time.monotonic() - started:.0f} s")
    result.print()
    sys.stdout.flush()
    return result


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        yield None
        return
    if not Path(CHROMIUM).exists():
        yield None
        return
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", choices=FAULTS, help="run only this fault (repeatable)")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds between the scripted model's words")
    parser.add_argument("--shots", type=Path, help="save a screenshot of each page of a fault not survived here")
    parser.add_argument("--serve-model", type=int, metavar="PORT", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_model:
        serve_model(options.serve_model, options.pace)
        return
    names = options.only or list(FAULTS)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as scratch, browser() as chromium:
        bench = Bench(options.pace, Path(scratch), chromium, options.shots)
        results = [run_fault(bench, name) for name in names]
    print("\n| fault | verdict | tokens lost (max per turn) | recovery |")
    print("| --- | --- | --- | --- |")
    for result in results:
        recovery = f"{result.recovery_s:.1f} s" if result.recovery_s is not None else "-"
        print(f"| {result.name} | {result.verdict()} | {result.lost_tokens} | {recovery} |")
    survived = sum(result.survived for result in results)
    print(f"\n{survived} of {len(results)} faults survived with at most the in-flight token lost.")


if __name__ == "__main__":
    main()
