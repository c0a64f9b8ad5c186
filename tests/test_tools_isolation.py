"""Tools run in worker processes: a timeout kills the worker, so no tool can freeze the app or run on.

Every test here fails with the old dispatch, which ran tools in a thread of the app and
abandoned them on timeout: a tool stuck in C code kept the GIL (the app froze until it
finished) and kept running after its timeout.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from tools import ToolRegistry, dispatch_tool, load_tools_dir
from tools.isolation import pool
from tools.workspace import current_workdir, tool_workdir

# Tools at the top level of this module: a worker process imports the module to find them.
registry = ToolRegistry()


@registry.register
def whoami() -> dict[str, Any]:
    """Where the tool ran."""
    return {"pid": os.getpid(), "workdir": str(current_workdir()), "mark": os.environ.get("TOOLS_ISOLATION_MARK")}


@registry.register
def power(exponent: int, pid_file: str) -> int:
    """10 ** exponent: C code that holds the GIL for as long as it takes."""
    Path(pid_file).write_text(str(os.getpid()))
    return 10**exponent


@registry.register
def chatty(text: str) -> str:
    print(f"working on {text}")
    return text.upper()


@registry.register
def fail(reason: str) -> None:
    print("about to fail")
    raise ValueError(reason)


@registry.register
def leave(code: int) -> None:
    os._exit(code)  # the whole worker process ends, as a segfault would end it


@registry.register
def generator() -> Any:
    return (n for n in range(3))  # cannot be pickled back to the app


def _rebuild_only_in(pid: int) -> Fragile:
    if os.getpid() != pid:
        raise RuntimeError("cannot be rebuilt outside the worker")
    return Fragile()


class Fragile:
    """Pickles in the worker, fails to unpickle in the app."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_only_in, (os.getpid(),))


@registry.register
def fragile() -> Any:
    return Fragile()


@registry.register
def nap(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


@contextmanager
def ticker() -> Iterator[Callable[[], float]]:
    """A thread of the app ticking every 10 ms; yields a function giving the longest gap between ticks."""
    longest = [0.0]
    stop = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not stop.wait(0.01):
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last)
            last = now

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield lambda: longest[0]
    finally:
        stop.set()
        thread.join()


def wait_until_gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(autouse=True)
def warm_worker() -> None:
    """The first call starts a worker (an interpreter importing `tools`); timings below are of warm calls."""
    assert dispatch_tool("whoami", {}, registry=registry).ok


@pytest.mark.parametrize("probe", ["round(1, -10**7)", "round(1, -2*10**7)", "10**10**7", "9**9**9"])
def test_calculator_probes_fail_fast_and_the_app_keeps_running(probe: str) -> None:
    # The old calculator computed round(1, -10**7) = 10**(10**7) in C: 6 s with the GIL held.
    with ticker() as longest_gap:
        started = time.perf_counter()
        result = dispatch_tool("calculator", {"expression": probe})
        elapsed = time.perf_counter() - started
        time.sleep(0.1)
    assert not result.ok
    assert result.text.startswith("Tool `calculator` raised CalculatorError: ")
    assert elapsed < 1
    assert longest_gap() < 0.5


def test_a_tool_stuck_in_c_code_is_killed_and_the_next_call_works(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with ticker() as longest_gap:
        started = time.perf_counter()
        # About 20 s of C code holding the GIL (hours for 10 ** 10**8); stopped after 1 s.
        result = dispatch_tool("power", {"exponent": 2 * 10**7, "pid_file": str(pid_file)}, 1, registry=registry)
        elapsed = time.perf_counter() - started
        time.sleep(0.1)  # a freeze that outlasted the call would show in the ticks after it
    assert result.text == "Tool `power` timed out after 1 s"
    assert elapsed < 5
    assert longest_gap() < 0.5  # the app never froze
    pid = int(pid_file.read_text())
    assert pid != os.getpid()
    assert wait_until_gone(pid)  # really stopped, not abandoned
    assert pid not in pool.live_pids()

    after = dispatch_tool("power", {"exponent": 3, "pid_file": str(pid_file)}, 10, registry=registry)
    assert after.ok and after.value == 1000


def test_a_sleeping_tools_dir_tool_is_killed_on_timeout(tmp_path: Path) -> None:
    tools_dir = tmp_path / "tools"
    tools_dir.mkdir()
    (tools_dir / "slow.py").write_text(
        "import os, time\n"
        "from tools import register_tool\n\n"
        "@register_tool\n"
        "def _isolation_test_slow(pid_file: str) -> str:\n"
        "    open(pid_file, 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "    return 'woke up'\n"
    )
    assert load_tools_dir(tools_dir) == []
    from tools import default_registry

    try:
        pid_file = tmp_path / "pid"
        result = dispatch_tool("_isolation_test_slow", {"pid_file": str(pid_file)}, timeout=1)
        assert result.text == "Tool `_isolation_test_slow` timed out after 1 s"
        pid = int(pid_file.read_text())
        assert pid != os.getpid()
        assert wait_until_gone(pid)
    finally:
        default_registry.unregister("_isolation_test_slow")


def test_the_session_workdir_and_environment_reach_the_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLS_ISOLATION_MARK", "first")
    with tool_workdir(tmp_path):
        first = dispatch_tool("whoami", {}, registry=registry).value
    monkeypatch.setenv("TOOLS_ISOLATION_MARK", "second")  # changed after the worker started
    second = dispatch_tool("whoami", {}, registry=registry).value
    assert first["pid"] != os.getpid()
    assert first["workdir"] == str(tmp_path)
    assert first["mark"] == "first"
    assert second["mark"] == "second"
    assert second["workdir"] == str(current_workdir())  # the app's own, when no session set one


def test_stdout_errors_and_odd_values_come_back_from_the_worker() -> None:
    chat = dispatch_tool("chatty", {"text": "abc"}, registry=registry)
    assert chat.value == "ABC"
    assert chat.stdout == "working on abc\n"

    failed = dispatch_tool("fail", {"reason": "no luck"}, registry=registry)
    assert failed.text == "Tool `fail` raised ValueError: no luck\n\nstdout:\nabout to fail\n"

    odd = dispatch_tool("generator", {}, registry=registry)
    assert odd.ok and odd.text.startswith('"<generator object generator.<locals>.<genexpr> at 0x')

    unreadable = dispatch_tool("fragile", {}, registry=registry)
    assert unreadable.text == (
        "Tool `fragile` returned a value that could not be passed back to the app: "
        "RuntimeError: cannot be rebuilt outside the worker"
    )


def test_a_worker_that_dies_is_reported_and_replaced() -> None:
    crashed = dispatch_tool("leave", {"code": 3}, registry=registry)
    assert not crashed.ok
    assert crashed.text == "Tool `leave` crashed: its worker process exited with code 3"
    assert dispatch_tool("chatty", {"text": "again"}, registry=registry).value == "AGAIN"


def test_overlapping_calls_get_their_own_workers() -> None:
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(dispatch_tool("nap", {"seconds": 0.5}, registry=registry)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(result.ok for result in results)
    assert len({result.value for result in results}) == 2


def test_closures_still_run_in_a_thread_of_the_app() -> None:
    local = ToolRegistry()
    seen: list[int] = []

    @local.register
    def remember() -> int:
        seen.append(os.getpid())  # shares this process's objects: no worker could
        return len(seen)

    assert dispatch_tool("remember", {}, registry=local).value == 1
    assert seen == [os.getpid()]


def test_the_shell_command_is_killed_when_the_call_times_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENABLE_SHELL_TOOL", "1")
    marker = "47.25"  # a sleep no other process runs

    def sleepers() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            if process.info["cmdline"] == ["sleep", marker]:
                found.append(process)
        return found

    results: list[Any] = []

    def call() -> None:
        with tool_workdir(tmp_path):
            results.append(dispatch_tool("shell", {"command": f"sleep {marker}"}, timeout=3))

    started = time.perf_counter()
    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 3
    while not sleepers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleepers(), "the command never started"
    caller.join()
    assert results[0].text == "Tool `shell` timed out after 3 s"
    assert time.perf_counter() - started < 6
    deadline = time.monotonic() + 5
    while sleepers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleepers() == []  # its own timeout was cut to the call's: the command did not run on for 20 s
