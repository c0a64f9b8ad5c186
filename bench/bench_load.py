"""Load: N users in real browsers cycle through Chat, Tool and Code Interpreter at once.

    .venv/bin/python bench/bench_load.py [--users 8] [--minutes 5] [--url URL --data-dir DIR] [--smoke]

Starts `streamlit run app.py` on a free port with its own DATA_DIR (or drives a running app
given with `--url`; pass its `--data-dir` for the store check) and runs N headless Chromium
contexts, one Streamlit session each, in one browser (Playwright's async API, one task per
user). The model is the embedded one, or `OPENAI_BASE_URL` when that is set. Each user
opens the modes through the sidebar and repeats, each mode in its own conversation:

- Chat: a question tagged `u<user>t<turn>`;
- Tool: the same, with "Force a tool call" set to `get_current_time` (a schema-valid call);
- Code Interpreter: asks for a python block that prints `u<user>t<turn>-marker` and plots;
  whether the model writes and runs it is up to the model (counted apart, see below).

A turn fails when it breaks: an error shown, a stuck page (its reply unchanged for 60 s),
no finished reply within `--turn-timeout` (600 s), or a reply the store lost, misplaced or
left incomplete. A slow turn that keeps streaming finishes: its time counts, and turns that
took over 180 s are listed.

Per mode it prints turns completed and failed, the time from Enter to the first text painted
in the new reply's bubble and to the finished reply (controls back, script idle), p50 and
p95; then the app's RSS, kernel processes and CPU over time, before, during and after the
users, and whether the kernels went back to idle once the users left. The CPU is split into
the app's (with its kernels and tools) and the users' side's: the browsers run on the same
cores here, which a real deployment leaves to the users' own machines, so the users' side runs in
the idle scheduling class (SCHED_IDLE). That does not leave them only the CPU the app leaves: Linux
first shares the cores between sessions (autogroups), and Chromium starts its own, so with both
busy the browsers take about 0.6 of the 2 cores (given the least weight instead, 0.2: too little
to draw 8 pages, whose inputs then waited over a minute). So that this is mostly the pages' own
work, they draw no animations (STILL_PAGES_JS). Last, it opens the store and
checks every turn: the user's exact message in the conversation of that user's `?c=`, then
a complete reply (non-empty, not interrupted, no error), and no message where none was sent.
The last line is `failed turns: F, lost messages: L, mixed messages: X`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import itertools
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from playwright.async_api import Page, async_playwright  # noqa: E402
from playwright.async_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from glm_client import GenerationParams, Message  # noqa: E402
from glm_client.client import loop_notice  # noqa: E402
from store import open_store  # noqa: E402
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, App, wait_for  # noqa: E402

MODES = ("chat", "tool", "code_interpreter")
AVATAR = "smart_toy"  # the assistant's avatar is a Material icon: its name is text in the bubble
NAV = {"chat": "Chat", "tool": "Tool", "code_interpreter": "Code Interpreter"}
PATHS = {"chat": "", "tool": "/tool", "code_interpreter": "/code_interpreter"}
HEADINGS = {"chat": "💬 Chat", "tool": "🛠️ Tool", "code_interpreter": "🧑‍💻 Code Interpreter"}
FORCED_TOOL = "get_current_time"
QUESTIONS = (
    "Name three colours.",
    "What is the capital of France?",
    "Give me one tip for sleeping well.",
    "What is a prime number?",
    "Say hello in Spanish.",
)
SAMPLE_EVERY_S = 2.0
# The users' pages end their CSS animations at once (the usual reduced-motion rule) and hide
# Streamlit's "Running..." indicator, which animates outside CSS. Both run as long as a turn does:
# 4 headless pages with a running status box took 0.36 of a core drawing them, against 0.13 without
# the CSS animations and 0.09 without either. A deployment draws them on the users' own machines.
STILL_PAGES_JS = """document.addEventListener("DOMContentLoaded", () => {
  const style = document.createElement("style");
  style.textContent = "*, *::before, *::after { animation-duration: 0.01ms !important;"
    + " animation-iteration-count: 1 !important; transition-duration: 0.01ms !important; }"
    + " [data-testid=stStatusWidget] { display: none !important; }";
  document.head.appendChild(style);
});"""
# How often a page is asked whether its turn has begun, and then whether it is done: each poll
# lays out the reply (innerText), and 8 pages polled 20 times a second took CPU from the app they
# measure. The first token is timed finely; a finished reply (tens of seconds) to half a second.
POLL_FIRST_MS = 50
POLL_DONE_MS = 500
PRINT_EVERY_S = 30.0
MIN_AFTER_S = 30.0  # watched after the users leave, at least

# One poll in the page: "error" (an st.error or exception in the new reply), "token" (the new
# reply's bubble shows text) or "done" (the reply is final: script idle, no Stop, Regenerate back).
TURN_STATE_JS = """
([n0, phase, avatar]) => {
  if (document.querySelector('[data-testid="stException"]')) return 'error';
  const messages = document.querySelectorAll('[data-testid="stChatMessage"]');
  if (messages.length < n0 + 2) return false;
  const bubble = messages[n0 + 1];
  // An error of the turn; one inside a call's box (a malformed call the model wrote) is the model's, not a failure.
  const errors = bubble.querySelectorAll('[data-testid="stAlertContentError"], [data-testid="stException"]');
  if ([...errors].some((e) => !e.closest('[data-testid="stExpander"]'))) return 'error';
  const content = bubble.querySelector('[data-testid="stChatMessageContent"]') || bubble;
  const text = content.innerText.replace(avatar, '').trim();
  if (phase === 'first') return text.length > 0 ? 'token' : false;
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const labels = [...document.querySelectorAll('button')].map((b) => b.innerText);
  if (labels.some((l) => l.includes('⏹ Stop')) || !labels.some((l) => l.includes('Regenerate'))) return false;
  return text.includes('▌') ? false : 'done';
}
"""
# The turn's reply as painted, to tell a page that still changes (tokens, a new round, a running
# cell's timer) from one that is stuck.
SHOWN_JS = """
([n0]) => {
  const messages = document.querySelectorAll('[data-testid="stChatMessage"]');
  return messages.length < n0 + 2 ? '' : messages[n0 + 1].innerText;
}
"""
# A reply unchanged this long is a stuck page, a failed turn: the longest quiet of a working turn is
# a prompt waiting for the decode thread under load (seconds), and a running cell shows its timer.
STALL_S = 60.0
CHECK_EVERY_S = 10.0
SLOW_S = 180.0  # turns that took longer are listed: slow, not failed
IDLE_JS = (
    "() => document.querySelector('[data-testid=\"stApp\"]')?.getAttribute('data-test-script-state') === 'notRunning'"
)


@dataclass
class Turn:
    user: int
    number: int
    mode: str
    prompt: str
    conversation_id: str = ""
    first_token_s: float | None = None
    finished_s: float | None = None
    failure: str = ""  # why the browser saw it fail; "" when it finished
    shown: str = ""  # the reply's text as painted (Chat), to compare with the store
    store_problem: str = ""


@dataclass
class Sample:
    t: float
    phase: str
    app_rss_mib: float
    tree_rss_mib: float
    kernels: int
    children: int
    app_cpu_s: float  # CPU seconds so far: the app with its kernels and tools,
    users_cpu_s: float  # and the users' side, the browsers and this script, on the same cores here


@dataclass
class RunState:
    turns: list[Turn] = field(default_factory=list)
    phase: str = "start"
    samples: list[Sample] = field(default_factory=list)


class LoggedApp(App):
    """tests/test_browser.py's App, with the app's output kept in a log file (evidence when something breaks)."""

    def __init__(self, data_dir: Path, env: dict[str, str], log_path: Path) -> None:
        super().__init__(data_dir, env)
        self.log_path = log_path

    def start(self) -> LoggedApp:
        env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL", "APP_PASSWORD")}
        env.update({"DATA_DIR": str(self.data_dir), "HF_HUB_OFFLINE": "1", **self.extra_env})
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(f"{self.url}/_stcore/health")
        return self


# -- Processes: the app's RSS and its kernels -------------------------------------------------


def app_process(url: str, started: App | None) -> psutil.Process | None:
    """The app's process: the one started here, or the one listening on the URL's port."""
    if started is not None and started.process is not None:
        return psutil.Process(started.process.pid)
    port = urlparse(url).port or 80
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
            return psutil.Process(connection.pid)
    return None


def is_kernel(process: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error):
        return any("ipykernel" in part for part in process.cmdline())
    return False


def measure(app: psutil.Process | None) -> tuple[float, float, int, int]:
    """(app RSS, app tree RSS, kernels, child processes); a kernel is counted once, not per bwrap layer."""
    if app is None:  # not ours to see: count kernels machine-wide
        everything = list(psutil.process_iter())
        roots = 0
        for process in everything:
            with contextlib.suppress(psutil.Error):
                parent = process.parent()
                roots += is_kernel(process) and not (parent is not None and is_kernel(parent))
        return 0.0, 0.0, roots, 0
    try:
        children = app.children(recursive=True)
        own = app.memory_info().rss
    except psutil.Error:
        return 0.0, 0.0, 0, 0
    tree = own
    kernels = 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            tree += child.memory_info().rss
            parent = child.parent()
            if is_kernel(child) and not (parent is not None and is_kernel(parent)):
                kernels += 1
    return own / 2**20, tree / 2**20, kernels, len(children)


def cpu_seconds(process: psutil.Process, skip: psutil.Process | None = None) -> float:
    """CPU time of a process and its descendants, the exited ones included (a parent reaps them,
    and their time with them); `skip`'s subtree left out."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        skipped = {skip.pid, *(child.pid for child in skip.children(recursive=True))} if skip is not None else set()
        for member in [process, *process.children(recursive=True)]:
            if member.pid in skipped:
                continue
            with contextlib.suppress(psutil.Error):
                times = member.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


def sampler(app: psutil.Process | None, state: RunState, stop: threading.Event, t0: float) -> None:
    while not stop.is_set():
        rss, tree, kernels, children = measure(app)
        app_cpu = cpu_seconds(app) if app is not None else 0.0
        users_cpu = cpu_seconds(psutil.Process(), skip=app)
        state.samples.append(
            Sample(time.monotonic() - t0, state.phase, rss, tree, kernels, children, app_cpu, users_cpu)
        )
        stop.wait(SAMPLE_EVERY_S)


# -- One user in one browser context ----------------------------------------------------------


def prompt_for(mode: str, user: int, number: int) -> str:
    tag = f"u{user}t{number}"
    if mode == "chat":
        return f"{tag}: {QUESTIONS[(user + number) % len(QUESTIONS)]}"
    if mode == "tool":
        return f"{tag}: What time is it in UTC right now?"
    # Of five phrasings this one made the embedded model write the code 4 times in 4 (a message that
    # holds the code block itself got "the output would be…" in prose instead).
    return f"{tag}: Write a python code block that prints '{tag}-marker' and plots [1, 2, 3] with matplotlib."


def conversation_of(url: str) -> str:
    return parse_qs(urlparse(url).query).get("c", [""])[0]


async def wait_idle(page: Page) -> None:
    await page.wait_for_function(IDLE_JS, polling=100)


async def open_mode(page: Page, mode: str, base_url: str, conversation_id: str) -> None:
    """Switch pages through the sidebar, as a user does: the same Streamlit session goes on.

    A session that began after a failed turn (see recover) opens a new conversation there;
    the user's own is reopened from its link, as from the history.
    """
    heading = page.get_by_role("heading", name=HEADINGS[mode])
    if await heading.count() == 0:
        await page.get_by_test_id("stSidebarNavLink").filter(has_text=NAV[mode]).first.click()
        await heading.wait_for()
    await page.get_by_test_id("stChatInputTextArea").wait_for()
    await wait_idle(page)
    if conversation_id and conversation_of(page.url) != conversation_id:
        await page.goto(f"{base_url}{PATHS[mode]}?c={conversation_id}")
        await page.get_by_test_id("stChatInputTextArea").wait_for()
        await wait_idle(page)
    if mode == "tool":
        combo = page.get_by_test_id("stSelectbox").filter(has_text="Force a tool call").get_by_role("combobox")
        if await combo.input_value() != FORCED_TOOL:  # a new conversation starts unforced
            # A click alone does not open this combobox's list; typing does, filtered to the one option.
            await combo.click()
            await combo.fill(FORCED_TOOL)
            await page.get_by_role("option", name=FORCED_TOOL, exact=True).click()
            await page.wait_for_timeout(300)  # the selection's rerun begins
            await wait_idle(page)
            if await combo.input_value() != FORCED_TOOL:
                raise RuntimeError("Force a tool call did not take")


async def run_turn(page: Page, turn: Turn, timeout_s: float) -> None:
    """Send the turn's message and time it; the Turn records the outcome."""
    n0 = await page.get_by_test_id("stChatMessage").count()
    box = page.get_by_test_id("stChatInputTextArea")
    await box.fill(turn.prompt)
    start = time.monotonic()
    await box.press("Enter")
    deadline = start + timeout_s
    try:
        state = await wait_for_state(page, n0, "first", POLL_FIRST_MS, deadline)
        turn.first_token_s = time.monotonic() - start
        if state != "error":
            state = await wait_for_state(page, n0, "done", POLL_DONE_MS, deadline)
        if state == "error":
            turn.failure = "error shown: " + await error_text(page, n0)
            return
        turn.finished_s = time.monotonic() - start
    except (PlaywrightTimeout, TurnStuck) as error:
        what = "first token" if turn.first_token_s is None else "finished reply"
        turn.failure = f"no {what}: {error}" if isinstance(error, TurnStuck) else f"no {what} within {timeout_s:.0f} s"
        return
    turn.conversation_id = conversation_of(page.url)
    if turn.mode == "chat":
        bubble = page.get_by_test_id("stChatMessage").nth(n0 + 1)
        turn.shown = await bubble.get_by_test_id("stMarkdownContainer").first.inner_text()


class TurnStuck(Exception):
    """The turn's reply did not change for STALL_S."""


async def wait_for_state(page: Page, n0: int, phase: str, polling_ms: int, deadline: float) -> str:
    """Wait until TURN_STATE_JS says `phase` (or "error"); raise TurnStuck when the reply stops changing
    for STALL_S, and PlaywrightTimeout at the deadline."""
    shown, changed_at = None, time.monotonic()
    while True:
        wait_s = min(CHECK_EVERY_S, deadline - time.monotonic())
        if wait_s <= 0:
            raise PlaywrightTimeout("past the turn's deadline")
        try:
            state = await page.wait_for_function(
                TURN_STATE_JS, arg=[n0, phase, AVATAR], polling=polling_ms, timeout=wait_s * 1000
            )
            return str(await state.json_value())
        except PlaywrightTimeout:
            now_shown = await page.evaluate(SHOWN_JS, [n0])
            if now_shown != shown:
                shown, changed_at = now_shown, time.monotonic()
            elif time.monotonic() - changed_at >= STALL_S:
                raise TurnStuck(f"the reply did not change for {STALL_S:.0f} s") from None


async def error_text(page: Page, n0: int) -> str:
    found = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
    with contextlib.suppress(Exception):
        if await found.count():
            return " ".join((await found.first.inner_text()).split())[:200]
    return "?"


async def recover(page: Page, base_url: str, mode: str, conversation_id: str) -> None:
    """After a failed turn: reopen the conversation in a fresh page load (a new Streamlit session)."""
    with contextlib.suppress(Exception):
        query = f"?c={conversation_id}" if conversation_id else ""
        await page.goto(f"{base_url}{PATHS[mode]}{query}")
        await page.get_by_test_id("stChatInputTextArea").wait_for(timeout=60_000)
        await wait_idle(page)


async def user_context(browser: Any) -> Any:
    """A browser context for one user, one Streamlit session, its pages drawn without animations."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    await context.add_init_script(STILL_PAGES_JS)
    return context


async def user_loop(browser: Any, user: int, base_url: str, end: float, timeout_s: float, state: RunState) -> None:
    context = await user_context(browser)
    try:
        page = await context.new_page()
        page.set_default_timeout(60_000)  # a step of the page (a turn has its own --turn-timeout)
        await page.goto(base_url)
        await page.get_by_test_id("stChatInputTextArea").wait_for()
        conversations: dict[str, str] = {}
        number = 0
        while time.monotonic() < end:
            mode = MODES[(user + number) % len(MODES)]  # users start on different modes: all three are busy
            number += 1
            turn = Turn(user, number, mode, prompt_for(mode, user, number))
            state.turns.append(turn)
            try:
                await open_mode(page, mode, base_url, conversations.get(mode, ""))
                await run_turn(page, turn, timeout_s)
            except Exception as error:  # a step of the page that never came: the turn failed, the user goes on
                turn.failure = turn.failure or f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
            # The conversation this turn went to; a failed turn's is the URL's, for the store check.
            turn.conversation_id = turn.conversation_id or conversation_of(page.url) or conversations.get(mode, "")
            if mode in conversations and turn.conversation_id and turn.conversation_id != conversations[mode]:
                turn.failure = turn.failure or f"the conversation changed to {turn.conversation_id}"
            if not conversations.get(mode):
                conversations[mode] = turn.conversation_id
            if turn.failure:
                await recover(page, base_url, mode, conversations.get(mode, ""))
    finally:
        await context.close()  # the user leaves: the websocket closes and the session ends


async def warm_up(browser: Any, base_url: str, timeout_s: float) -> str:
    """One chat turn before the clock starts (the model loads on first use); returns its conversation."""
    context = await user_context(browser)
    try:
        page = await context.new_page()
        page.set_default_timeout(180_000)
        await page.goto(base_url)
        await page.get_by_test_id("stChatInputTextArea").wait_for()
        turn = Turn(-1, 0, "chat", "warm-up: say hi")
        await run_turn(page, turn, timeout_s)
        if turn.failure:
            raise RuntimeError(f"the warm-up turn failed: {turn.failure}")
        return turn.conversation_id
    finally:
        await context.close()


async def drive(args: argparse.Namespace, base_url: str, state: RunState, t0_box: list[float]) -> str:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            state.phase = "warm-up"
            warm = await warm_up(browser, base_url, args.turn_timeout)
            await asyncio.sleep(3)  # the warm-up's session ends
            state.phase = "idle-before"
            await asyncio.sleep(2 * SAMPLE_EVERY_S)
            state.phase = "users"
            t0_box.append(time.monotonic())
            end = time.monotonic() + args.minutes * 60
            tasks = []
            for user in range(args.users):
                tasks.append(asyncio.create_task(user_loop(browser, user, base_url, end, args.turn_timeout, state)))
                await asyncio.sleep(args.ramp_s)  # staggered arrivals, as people do
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, BaseException):
                    print(f"a user stopped early: {type(result).__name__}: {result}", flush=True)
            state.phase = "left"
            t0_box.append(time.monotonic())
        finally:
            await browser.close()
    return warm


# -- Results ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]


def seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def normalised(text: str) -> str:
    """Letters and digits only: Markdown's syntax (a numbered list's "1." too, which the page draws
    as a list marker, not text) and the page's line breaks do not count."""
    text = re.sub(r"(?m)^\s*\d+[.)]\s", "", text.replace(AVATAR, ""))
    return re.sub(r"[\W_]+", "", text).lower()


def check_store(state: RunState, data_dir: Path, database_url: str | None, warm: str) -> dict[str, Any]:
    """Every finished turn complete in its own conversation; nothing anywhere that was not sent there."""
    store = open_store(database_url, data_dir)
    try:
        loaded = {summary.id: store.load(summary.id) for summary in store.list(limit=1_000_000)}
    finally:
        store.close()
    lost = mixed = shown_differs = 0
    problems: list[str] = []
    expected: dict[str, list[Turn]] = {}
    owner: dict[str, tuple[int, str]] = {}
    for turn in state.turns:
        if turn.conversation_id:
            expected.setdefault(turn.conversation_id, []).append(turn)
            owner.setdefault(turn.conversation_id, (turn.user, turn.mode))
    ci_ran = ci_marker = ci_plot = tool_calls = 0
    for turn in state.turns:
        if turn.failure:
            continue
        conversation = loaded.get(turn.conversation_id)
        messages = conversation.messages if conversation is not None else []
        starts = [i for i, m in enumerate(messages) if m.role == "user" and m.content == turn.prompt]
        if conversation is None or conversation.mode != turn.mode or len(starts) != 1:
            turn.store_problem = f"{len(starts)} copies of the message in {turn.conversation_id or 'no conversation'}"
            lost += 1
            continue
        end = next((i for i in range(starts[0] + 1, len(messages)) if messages[i].role == "user"), len(messages))
        segment = messages[starts[0] + 1 : end]
        problem = incomplete(segment)
        if problem:
            turn.store_problem = problem
            lost += 1
            continue
        mixed += extra_replies(segment)
        if turn.mode == "code_interpreter":
            observations = [m for m in segment if m.role == "observation"]
            marker = turn.prompt.split(":")[0] + "-marker"
            ci_ran += bool(observations)
            # A printed line that starts with it: a traceback quoting the print() call does not count.
            ci_marker += any(line.strip().startswith(marker) for m in observations for line in m.content.splitlines())
            ci_plot += any(m.images for m in observations)
        if turn.mode == "tool":
            tool_calls += any(call.name == FORCED_TOOL for m in segment for call in m.tool_calls)
        if turn.mode == "chat" and turn.shown:
            stored = normalised(segment[-1].content)
            shown = normalised(turn.shown)
            if stored != shown and difflib.SequenceMatcher(None, stored, shown).ratio() < 0.95:
                shown_differs += 1
                problems.append(
                    f"u{turn.user}t{turn.number}: shown {turn.shown[:60]!r} vs stored {segment[-1].content[:60]!r}"
                )
    # Every user message anywhere must be one that was sent to that conversation (or, for a turn that
    # failed before its conversation was known, to a conversation of that mode).
    unplaced = {turn.prompt: turn.mode for turn in state.turns if not turn.conversation_id}
    for conversation_id, conversation in loaded.items():
        if conversation is None or conversation_id == warm:
            continue
        sent = {turn.prompt for turn in expected.get(conversation_id, [])}
        for message in conversation.messages:
            if message.role != "user" or message.content in sent:
                continue
            if unplaced.get(message.content) != conversation.mode:
                mixed += 1
                who = owner.get(conversation_id)
                problems.append(f"{conversation_id} ({who}): unexpected user message {message.content[:60]!r}")
    for turn in state.turns:
        if turn.store_problem:
            problems.append(f"u{turn.user}t{turn.number} {turn.mode}: {turn.store_problem}")
    replies = [
        message
        for conversation_id, conversation in loaded.items()
        if conversation is not None and conversation_id != warm
        for message in conversation.messages
        if message.role == "assistant"
    ]
    stopped_loop = loop_notice(GenerationParams().loop_stop_tokens)
    return {
        "lost": lost,
        "mixed": mixed,
        "shown_differs": shown_differs,
        "problems": problems,
        "ci_ran": ci_ran,
        "ci_marker": ci_marker,
        "ci_plot": ci_plot,
        "tool_calls": tool_calls,
        "conversations": len(loaded),
        "replies": len(replies),
        "tokens": sum(message.meta.get("completion_tokens", 0) for message in replies),
        "loops_stopped": sum(stopped_loop in message.meta.get("notices", []) for message in replies),
        "ran_to_limit": sum(message.meta.get("finish_reason") == "length" for message in replies),
    }


def incomplete(segment: list[Message]) -> str:
    """Why a turn's stored reply is not complete; "" when it is."""
    if not segment:
        return "no reply stored"
    for message in segment:
        if message.meta.get("error"):
            return f"stored with an error: {str(message.meta['error'])[:80]}"
        if message.meta.get("interrupted") or message.meta.get("streaming"):
            return "stored as interrupted (a draft, or stopped)"
    last = segment[-1]
    if last.role != "assistant" or last.tool_calls or not last.content.strip():
        return f"the turn ends in {last.role} {'with calls' if last.tool_calls else 'without text'}"
    return ""


def extra_replies(segment: list[Message]) -> int:
    """Replies where none belongs: an answer after a final answer (a turn answered twice)."""
    count = 0
    for before, after in itertools.pairwise(segment):
        if before.role == "assistant" and not before.tool_calls and after.role == "assistant":
            count += 1
    return count


def print_report(
    state: RunState, store: dict[str, Any] | None, log_path: Path | None, users_s: float
) -> tuple[int, int, int]:
    failed_by_store = {id(t) for t in state.turns if t.store_problem}
    print()
    print(f"{'mode':<17}{'done':>6}{'failed':>8}{'1st p50':>9}{'1st p95':>9}{'end p50':>9}{'end p95':>9}  (seconds)")
    failed_total = 0
    for mode in MODES:
        turns = [t for t in state.turns if t.mode == mode]
        done = [t for t in turns if not t.failure and id(t) not in failed_by_store]
        failed = len(turns) - len(done)
        failed_total += failed
        first = [t.first_token_s for t in done if t.first_token_s is not None]
        end = [t.finished_s for t in done if t.finished_s is not None]
        print(
            f"{mode:<17}{len(done):>6}{failed:>8}{seconds(percentile(first, 50)):>9}{seconds(percentile(first, 95)):>9}"
            f"{seconds(percentile(end, 50)):>9}{seconds(percentile(end, 95)):>9}"
        )
    failures = [t for t in state.turns if t.failure]
    for turn in failures[:20]:
        print(f"  failed u{turn.user}t{turn.number} {turn.mode}: {turn.failure}")
    slow = sorted(
        (t for t in state.turns if t.finished_s is not None and t.finished_s > SLOW_S), key=lambda t: -t.finished_s
    )
    listed = ", ".join(f"u{t.user}t{t.number} {t.mode} {t.finished_s:.0f} s" for t in slow[:10])
    print(f"Finished after more than {SLOW_S:.0f} s (slow, not failed): {len(slow)}{': ' + listed if slow else ''}")
    if store is not None:
        ci = sum(1 for t in state.turns if t.mode == "code_interpreter" and not t.failure)
        tool = sum(1 for t in state.turns if t.mode == "tool" and not t.failure)
        print(
            f"Code Interpreter: of {ci} finished turns, {store['ci_ran']} ran code in the kernel, "
            f"{store['ci_marker']} printed the marker, {store['ci_plot']} returned a plot. A turn counts as "
            "completed when its reply finished, whatever the code did (the embedded 135M model's code is mostly wrong)."
        )
        print(f"Tool: {store['tool_calls']}/{tool} finished turns stored the forced {FORCED_TOOL} call.")
        print(f"Chat replies shown differently from what was stored: {store['shown_differs']}")
        print(
            f"Replies stored (every round of every turn): {store['replies']}; {store['loops_stopped']} stopped as "
            f"loops, {store['ran_to_limit']} ran to max_new_tokens."
        )
        # The model's throughput under this load: what the users' turns got out of the machine.
        print(
            f"Tokens written: {store['tokens']}, {store['tokens'] / users_s:.1f} a second over the users' {users_s:.0f} s."
        )
        for line in store["problems"][:20]:
            print(f"  store: {line}")

    print()
    print_series(state)
    if log_path is not None and log_path.exists():
        text = log_path.read_text(errors="replace")
        tracebacks = text.count("Traceback (most recent call last)")
        errors = [line for line in text.splitlines() if re.search(r"\b(ERROR|Error|Exception)\b", line)]
        print(f"App log {log_path}: {tracebacks} tracebacks, {len(errors)} error lines")
        for line in errors[:10]:
            print(f"  {line[:200]}")
    lost = store["lost"] if store else 0
    mixed = store["mixed"] if store else 0
    return failed_total, lost, mixed


def print_series(state: RunState) -> None:
    """Every PRINT_EVERY_S, at each change of phase, and the last sample; CPU in cores since the row before."""
    samples = state.samples
    if not samples:
        return
    print(
        f"{'t (s)':>7}  {'phase':<12}{'app RSS':>9}{'tree RSS':>10}{'kernels':>9}{'procs':>7}{'app CPU':>9}{'users CPU':>11}"
        "   (MiB, cores; t from the users' start)"
    )
    printed: Sample | None = None
    for index, sample in enumerate(samples):
        last = index == len(samples) - 1
        due = printed is None or sample.t - printed.t >= PRINT_EVERY_S
        if due or sample.phase != printed.phase or last:
            app_cores, users_cores = cores(printed, sample) if printed is not None else ("", "")
            print(
                f"{sample.t:>7.0f}  {sample.phase:<12}"
                f"{sample.app_rss_mib:>9.0f}{sample.tree_rss_mib:>10.0f}{sample.kernels:>9}{sample.children:>7}"
                f"{app_cores:>9}{users_cores:>11}"
            )
            printed = sample
    during = [s for s in samples if s.phase == "users"]
    if during:
        peak = max(during, key=lambda s: s.tree_rss_mib)
        print(
            f"peak during the users: app {max(s.app_rss_mib for s in during):.0f} MiB, tree {peak.tree_rss_mib:.0f} MiB, "
            f"{max(s.kernels for s in during)} kernels"
        )
        app_cores, users_cores = cores(during[0], during[-1])
        print(
            f"CPU during the users, of {os.cpu_count()} cores: the app and its kernels {app_cores}, "
            f"the users' side {users_cores} (browsers and this script: here on the same cores, not in a real deployment)"
        )


def cores(before: Sample, after: Sample) -> tuple[str, str]:
    """The app's and the users' side's CPU use between two samples, in cores ("—" once the browsers closed)."""
    elapsed = max(after.t - before.t, 1e-9)
    used = ((after.app_cpu_s - before.app_cpu_s) / elapsed, (after.users_cpu_s - before.users_cpu_s) / elapsed)
    app, users = (f"{value:.2f}" if value >= 0 else "—" for value in used)
    return app, users


def settle(state: RunState, idle_kernels: int, timeout_s: float, left_at: float, t0: float) -> float | None:
    """Seconds after the users left until the kernel count was back to idle for three samples in a row
    (None: not within `timeout_s`); watches at least MIN_AFTER_S, so the series shows memory settle too."""
    state.phase = "left"
    back = None
    while time.monotonic() < left_at + timeout_s:
        after = [s for s in state.samples if s.t + t0 >= left_at]
        if back is None:
            for index in range(len(after) - 2):
                if all(s.kernels <= idle_kernels for s in after[index : index + 3]):
                    back = after[index].t + t0 - left_at
                    break
        if back is not None and time.monotonic() >= left_at + MIN_AFTER_S:
            return back
        time.sleep(SAMPLE_EVERY_S)
    return back


def leftovers(process: psutil.Process | None) -> str:
    """The app's child processes now, by command (tool workers stay warm on purpose; kernels should not)."""
    if process is None:
        return "unknown (not started here)"
    names: dict[str, int] = {}
    with contextlib.suppress(psutil.Error):
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                command = " ".join(" ".join(child.cmdline()).replace(str(ROOT) + "/", "").split())[:80]
                names[command] = names.get(command, 0) + 1
    return "; ".join(f"{count} × {command}" for command, count in names.items()) or "none"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8, help="concurrent users (default 8)")
    parser.add_argument("--minutes", type=float, default=5.0, help="minutes the users start turns (default 5)")
    parser.add_argument("--url", help="a running app (default: start one here on a free port)")
    parser.add_argument("--data-dir", type=Path, help="the app's DATA_DIR (default: a new temporary one)")
    parser.add_argument("--smoke", action="store_true", help="a quick trial: 2 users for 1 minute")
    parser.add_argument(
        "--turn-timeout", type=float, default=600.0, help="seconds a turn may take, however it streams (default 600)"
    )
    parser.add_argument("--ramp-s", type=float, default=2.0, help="seconds between users' arrivals (default 2)")
    parser.add_argument("--settle-s", type=float, default=180.0, help="seconds to wait for idle kernels after")
    args = parser.parse_args()
    if args.smoke:
        args.users, args.minutes = 2, 1.0

    database_url = os.environ.get("DATABASE_URL") or None
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench_load_"))
    app: LoggedApp | None = None
    log_path: Path | None = None
    if args.url:
        base_url = args.url.rstrip("/")
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        log_path = data_dir / "app.log"
        env = {key: os.environ[key] for key in ("OPENAI_BASE_URL", "MODEL_PATH") if os.environ.get(key)}
        app = LoggedApp(data_dir, env, log_path).start()
        base_url = app.url
    # The users' side (this script, and the browsers it starts from here on) yields the cores to the
    # app it measures: their browsers would run on the users' own machines, not beside the app.
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # inherited by the browsers
    backend = (
        f"OPENAI_BASE_URL={os.environ['OPENAI_BASE_URL']}" if os.environ.get("OPENAI_BASE_URL") else "embedded model"
    )
    print(
        f"bench_load: {args.users} users for {args.minutes:g} min against {base_url} ({backend}); "
        f"DATA_DIR {data_dir if (app or args.data_dir) else '(unknown: no store check)'}; {os.cpu_count()} CPUs",
        flush=True,
    )

    state = RunState()
    stop = threading.Event()
    t_start = time.monotonic()
    process = app_process(base_url, app)
    thread = threading.Thread(target=sampler, args=(process, state, stop, t_start), daemon=True)
    thread.start()
    t0: list[float] = []
    try:
        warm = asyncio.run(drive(args, base_url, state, t0))
        idle = [s.kernels for s in state.samples if s.phase == "idle-before"] or [0]
        idle_kernels = min(idle)
        back = settle(state, idle_kernels, args.settle_s, t0[1], t_start)
        stop.set()
        thread.join()
        users_start = t0[0] - t_start
        for sample in state.samples:
            sample.t -= users_start  # t from the users' arrival: negative before, duration + x after
        print(
            f"\n{len(state.turns)} turns by {args.users} users in {t0[1] - t0[0]:.0f} s "
            f"(users stopped starting turns after {args.minutes * 60:.0f} s)."
        )
        store = check_store(state, data_dir, database_url, warm) if (app or args.data_dir) else None
        failed, lost, mixed = print_report(state, store, log_path, t0[1] - t0[0])
        if back is None:
            print(
                f"Kernels: NOT back to idle ({idle_kernels}) within {args.settle_s:.0f} s after the users left "
                f"(last count {state.samples[-1].kernels})."
            )
        else:
            print(f"Kernels: back to idle ({idle_kernels}) {back:.0f} s after the users left.")
        print(f"The app's child processes after the users left: {leftovers(process)}")
    finally:
        stop.set()
        if app is not None:
            app.stop()
    print(f"failed turns: {failed}, lost messages: {lost}, mixed messages: {mixed}")


if __name__ == "__main__":
    main()
