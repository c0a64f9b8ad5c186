"""KernelSession against real ipykernel processes: outputs, limits, lifecycle, files."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from kernel import MAX_OBSERVATION_CHARS, MAX_RESULT_TEXT_CHARS, KernelSession, live_sessions, shutdown_idle
from kernel.limits import INTERRUPT_GRACE_S, MiB
from sandbox import SandboxChoice

pytestmark = pytest.mark.kernel

# Everything a kernel does must hold in the sandbox and without it.
SANDBOXES = {"bwrap": SandboxChoice("bwrap"), "none": SandboxChoice("none", "unconfined in this test")}


@pytest.fixture(scope="module", params=list(SANDBOXES))
def sandbox(request: pytest.FixtureRequest) -> SandboxChoice:
    if request.param == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    return SANDBOXES[request.param]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_gone(pid: int) -> bool:
    """Dead: no such process, or a zombie that only its new parent (init) has left to reap."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.fixture(scope="module")
def session(sandbox: SandboxChoice) -> Iterator[KernelSession]:
    """One kernel shared by the tests that leave it usable (most of them check exactly that)."""
    with KernelSession(sandbox=sandbox) as shared:
        yield shared


def test_outputs_arrive_in_order_with_plots_as_png(session: KernelSession) -> None:
    result = session.execute(
        "import matplotlib.pyplot as plt\n"
        "print('before')\n"
        "plt.plot([1, 2, 3]); plt.show()\n"
        "print('after', flush=True)\n"
        "display('shown')\n"
        "plt.plot([3, 2, 1])\n"  # a figure left open at the end of the cell is shown too
        "6 * 7\n"
    )
    assert result.status == "ok", result.to_observation()
    kinds = [(output.kind, output.text if output.png is None else "png") for output in result.outputs]
    assert kinds == [
        ("stream", "before\n"),
        ("display", "png"),
        ("stream", "after\n"),
        ("display", "'shown'"),
        ("result", "42"),
        ("display", "png"),
    ]
    assert len(result.images) == 2
    assert all(image.startswith(PNG_SIGNATURE) for image in result.images)
    assert result.text == "before\nafter\n'shown'\n42"
    assert result.to_observation() == "before\n[Image]\nafter\n'shown'\n42\n[Image]"
    assert result.execution_count is not None


def test_error_after_output_keeps_both_and_strips_ansi(session: KernelSession) -> None:
    result = session.execute(
        "import sys\nprint('partial')\nprint('warn', file=sys.stderr)\ndef inner():\n    raise ValueError('boom')\ninner()"
    )
    assert result.status == "error"
    assert [output.kind for output in result.outputs] == ["stream", "stream", "error"]
    assert [output.name for output in result.outputs[:2]] == ["stdout", "stderr"]
    error = result.error
    assert error is not None and (error.ename, error.evalue) == ("ValueError", "boom")
    assert error.traceback and not any("\x1b" in line for line in error.traceback)
    observation = result.to_observation()
    assert observation.startswith("partial\nwarn\n")
    assert "raise ValueError('boom')" in observation
    assert observation.endswith("ValueError: boom")


def test_the_model_reads_library_frames_by_module_and_a_repeated_line_once(session: KernelSession) -> None:
    code = (
        "import json, sys\n"
        "for _ in range(12):\n"
        "    print(\"findfont: Font family 'Times New Roman' not found.\", file=sys.stderr)\n"
        "json.loads('{')"
    )
    result = session.execute(code)
    observation = result.to_observation()
    assert observation.startswith(
        "findfont: Font family 'Times New Roman' not found.\n... [the line above 11 more times] ...\nCell In["
    )
    assert "File json/decoder.py:" in observation and "/lib/python3" not in observation
    assert result.text.count("findfont") == 12  # the user sees every line
    assert any("/lib/python3" in frame for frame in result.error.traceback)  # and every frame whole


def test_timeout_interrupts_and_keeps_the_session(session: KernelSession) -> None:
    session.execute("kept = 'still here'")
    result = session.execute("while True:\n    pass", timeout=2)
    assert result.status == "timeout"
    assert "Execution timed out after 2 s" in result.text
    assert 2 <= result.duration_s < 2 + INTERRUPT_GRACE_S + 1
    assert session.execute("print(kept)").text == "still here\n"  # interrupted, not restarted


def test_interrupt_from_another_thread(session: KernelSession) -> None:
    done = threading.Event()

    def keep_interrupting() -> None:  # repeated: an interrupt that lands before the code starts is ignored
        wait_until(lambda: session.busy)
        while not done.wait(0.3):
            session.interrupt()

    thread = threading.Thread(target=keep_interrupting)
    thread.start()
    result = session.execute("import time\ntime.sleep(30)")
    done.set()
    thread.join()
    assert result.status == "interrupted"
    assert result.error is not None and result.error.ename == "KeyboardInterrupt"
    assert result.duration_s < 10
    assert session.execute("1 + 1").text == "2"


def test_restart_from_another_thread_stops_running_code(session: KernelSession) -> None:
    def restart_while_busy() -> None:
        wait_until(lambda: session.busy)
        time.sleep(0.5)
        session.restart()

    thread = threading.Thread(target=restart_while_busy)
    thread.start()
    result = session.execute("import time\ntime.sleep(30)")
    thread.join()
    assert result.status == "died"
    assert "restarted while the code ran" in result.text
    assert result.duration_s < 10
    assert session.execute("1 + 1").text == "2"


def test_input_fails_at_once_with_a_clear_error(session: KernelSession) -> None:
    result = session.execute("name = input('Your name? ')", timeout=20)
    assert result.status == "error"
    assert result.duration_s < 5
    assert "input() is not available" in result.to_observation()


@pytest.mark.parametrize(
    "crash", ["import os; os._exit(1)", "import ctypes; ctypes.string_at(0)"], ids=["exit", "segfault"]
)
def test_kernel_death_is_reported_and_the_kernel_restarted(session: KernelSession, crash: str) -> None:
    session.execute("lost = 1")
    old_pid = session.pid
    result = session.execute(f"print('last words', flush=True)\n{crash}")
    assert result.status == "died"
    assert "The kernel died" in result.text and "restarted" in result.text
    assert session.is_alive() and session.pid != old_pid
    assert is_gone(old_pid)
    after = session.execute("print('alive')")
    assert (after.status, after.text) == ("ok", "alive\n")
    assert session.execute("lost").error.ename == "NameError"


def test_kernel_killed_between_executions_is_revived(session: KernelSession) -> None:
    os.kill(session.pid, signal.SIGKILL)  # as the OOM killer would
    assert wait_until(lambda: not session.is_alive())
    result = session.execute("print('fresh')")
    assert result.status == "ok", result.text
    assert result.outputs[0].name == "stderr" and "killed by SIGKILL" in result.outputs[0].text
    assert result.outputs[-1].text == "fresh\n"


def test_timeout_restarts_a_kernel_that_ignores_the_interrupt(session: KernelSession) -> None:
    old_pid = session.pid
    result = session.execute(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)", timeout=1
    )
    assert result.status == "timeout"
    assert "Execution timed out after 1 s" in result.text and "restarted" in result.text
    assert result.duration_s < 1 + INTERRUPT_GRACE_S + 10
    assert session.pid != old_pid
    assert session.execute("print('back')").text == "back\n"


def test_memory_bomb_is_contained(sandbox: SandboxChoice) -> None:
    limit = 1024 * MiB  # small, so the bomb fails at once instead of filling this machine's memory
    with KernelSession(memory_limit_bytes=limit, sandbox=sandbox) as small:
        assert small.execute("import resource\nresource.getrlimit(resource.RLIMIT_AS)").text == f"({limit}, {limit})"
        for bomb in ("x = bytearray(2 * 1024**3)", "y = [0] * 10**10"):
            result = small.execute(bomb, timeout=30)
            died = result.status == "died"
            assert died or (result.status == "error" and result.error.ename == "MemoryError"), result.text
        assert small.execute("print('usable')").text == "usable\n"


def test_output_is_capped_per_result_and_for_the_model(session: KernelSession) -> None:
    result = session.execute("print('x' * 10_000_000)")
    assert result.status == "ok"
    assert MAX_RESULT_TEXT_CHARS <= len(result.text) < MAX_RESULT_TEXT_CHARS + 200
    assert "Output truncated" in result.text
    observation = result.to_observation()
    assert len(observation) <= MAX_OBSERVATION_CHARS
    assert "characters omitted" in observation
    assert observation.startswith("xxx") and "Output truncated" in observation[-200:]


def test_sessions_are_isolated(session: KernelSession) -> None:
    session.execute("secret = 'first'\nopen('mine.txt', 'w').write('1')")
    with KernelSession(sandbox=session.sandbox) as other:
        assert other.workdir != session.workdir
        assert other.execute("import os; os.getcwd()").text == repr(other.cwd)
        assert other.execute("secret").error.ename == "NameError"
        assert other.execute("import os; os.path.exists('mine.txt')").text == "False"
    assert session.execute("secret").text == "'first'"


def test_channels_are_unix_sockets_and_the_interpreter_is_ours(session: KernelSession) -> None:
    session.start()
    info = session.connection_info
    assert info["transport"] == "ipc"
    assert "key" not in info
    for channel in ("shell", "iopub", "stdin", "control", "hb"):
        assert stat.S_ISSOCK(Path(f"{info['ip']}-{info[f'{channel}_port']}").stat().st_mode), channel
    assert Path(info["ip"]).parent.stat().st_mode & 0o077 == 0  # socket directory private to this user
    # The only TCP socket is ipykernel's own loopback pipe for output of forked subprocesses.
    listening = [c for c in psutil.Process(session.pid).net_connections(kind="inet") if c.status == "LISTEN"]
    assert len(listening) <= 1 and all(c.laddr.ip == "127.0.0.1" for c in listening)
    assert session.execute("import sys; sys.executable").text == repr(sys.executable)


def test_shutdown_leaves_no_processes(sandbox: SandboxChoice) -> None:
    me = psutil.Process()
    before = {child.pid for child in me.children(recursive=True)}
    doomed = KernelSession(sandbox=sandbox)
    workdir = doomed.workdir
    result = doomed.execute(
        "import subprocess\n"
        "plain = subprocess.Popen(['sleep', '60'])\n"
        "escaped = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"
    )
    assert result.status == "ok", result.text
    # Seen from the host (pids inside a sandbox are its own): the kernel, both sleeps, and bwrap's when sandboxed.
    started = {child.pid for child in me.children(recursive=True)} - before
    sleeps = [pid for pid in started if psutil.Process(pid).name() == "sleep"]
    assert len(sleeps) == 2 and doomed.pid in started

    doomed.shutdown()

    assert {child.pid for child in me.children(recursive=True)} - before == set()
    assert wait_until(lambda: all(is_gone(pid) for pid in started))
    assert doomed not in live_sessions() and not doomed.is_alive()
    assert not workdir.exists()  # a temporary working directory goes with the session
    with pytest.raises(RuntimeError, match="shut down"):
        doomed.execute("1")


def test_kernels_are_shut_down_when_the_app_exits(tmp_path: Path) -> None:
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from kernel import KernelSession\n"
        "session = KernelSession(); session.start(); print(session.pid, flush=True)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    finished = subprocess.run([sys.executable, "-c", script, root], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    kernel_pid = int(finished.stdout.split()[-1])
    assert wait_until(lambda: is_gone(kernel_pid))


def test_restart_keeps_files_and_drops_variables(session: KernelSession) -> None:
    session.execute("gone = 1\nopen('survivor.txt', 'w').write('kept')")
    old_pid = session.pid
    session.restart()
    assert session.pid != old_pid and is_gone(old_pid)
    assert session.execute("gone").error.ename == "NameError"
    assert session.execute("open('survivor.txt').read()").text == "'kept'"


def test_idle_sessions_are_reaped(session: KernelSession) -> None:
    idle = KernelSession()
    idle.last_used -= 3600
    session.execute("1")
    reaped = shutdown_idle(max_idle_s=600)
    assert idle in reaped and idle.closed
    assert session not in reaped and not session.closed


def test_uploads_stay_in_the_workdir(session: KernelSession) -> None:
    workdir = session.workdir
    for name, expected in [
        ("../escape.txt", "escape.txt"),
        ("/etc/passwd", "passwd"),
        ("..\\..\\win.ini", "win.ini"),
        ("", "upload"),
        ("..", "upload"),
        (".bashrc", "bashrc"),
        ("数据 v1.csv", "数据 v1.csv"),
        ("a/b/c:d*e.txt", "c_d_e.txt"),
    ]:
        path = session.save_upload(name, b"payload")
        assert path == workdir / expected, name
        assert path.read_bytes() == b"payload"
    assert not (workdir.parent / "escape.txt").exists()
    assert session.execute("open('passwd').read()").text == "'payload'"


def test_upload_over_the_limit_is_refused(session: KernelSession) -> None:
    with pytest.raises(ValueError, match="limited to 1,000 bytes"):
        session.save_upload("big.bin", b"x" * 1001, max_bytes=1000)
    assert not (session.workdir / "big.bin").exists()


def test_upload_does_not_follow_a_planted_symlink(session: KernelSession, tmp_path: Path) -> None:
    target = tmp_path / "outside.txt"
    target.write_text("original")
    os.symlink(target, session.workdir / "trap.txt")
    session.save_upload("trap.txt", b"new")
    assert target.read_text() == "original"
    assert (session.workdir / "trap.txt").read_bytes() == b"new"


def test_new_files_are_listed(session: KernelSession) -> None:
    session.save_upload("input.csv", b"a,b\n1,2\n")
    snapshot = session.files_snapshot()
    session.execute(
        "import os\nos.makedirs('out', exist_ok=True)\n"
        "open('out/chart.txt', 'w').write('c')\nopen('.hidden', 'w').write('h')"
    )
    workdir = session.workdir
    assert session.new_files_since(snapshot) == [workdir / "out" / "chart.txt"]
    listed = session.list_files()
    assert workdir / "input.csv" in listed and workdir / "out" / "chart.txt" in listed
    assert workdir / ".hidden" not in listed


def test_upload_does_not_write_through_a_planted_hard_link(session: KernelSession, tmp_path: Path) -> None:
    target = tmp_path / "outside-hard.txt"
    target.write_text("original")
    os.link(target, session.workdir / "hard.txt")
    session.save_upload("hard.txt", b"new")
    assert target.read_text() == "original"
    assert (session.workdir / "hard.txt").read_bytes() == b"new"
    assert not [path for path in session.workdir.iterdir() if path.name.endswith(".part")]


def test_upload_over_a_planted_folder_is_refused_in_words(session: KernelSession) -> None:
    (session.workdir / "folder.csv").mkdir()
    with pytest.raises(ValueError, match=re.escape("A folder named 'folder.csv' is in the working directory")):
        session.save_upload("folder.csv", b"data")
    assert (session.workdir / "folder.csv").is_dir()
    assert not [path for path in session.workdir.iterdir() if path.name.endswith(".part")]


def test_downloads_never_follow_a_link_swapped_in(session: KernelSession, tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    (session.workdir / "sub").mkdir(exist_ok=True)
    (session.workdir / "sub" / "real.txt").write_text("mine")
    assert session.read_file(session.workdir / "sub" / "real.txt", 100) == b"mine"
    os.symlink(secret, session.workdir / "swapped.txt")  # a file replaced by a link after the listing
    os.symlink(tmp_path, session.workdir / "linkdir")  # or a folder on the way
    for path in (session.workdir / "swapped.txt", session.workdir / "linkdir" / "host-secret.txt"):
        with pytest.raises(OSError):
            session.read_file(path, 100)
    with pytest.raises(ValueError, match="larger than"):
        session.read_file(session.workdir / "sub" / "real.txt", 2)


def test_uploads_of_a_session_have_a_total_budget(tmp_path: Path) -> None:
    session = KernelSession(tmp_path / "work", sandbox=SANDBOXES["none"])  # no kernel starts for uploads
    session.upload_budget_bytes = 1000
    session.save_upload("a.bin", b"x" * 600)
    with pytest.raises(ValueError, match="does not fit: this session may upload 400 more bytes"):
        session.save_upload("b.bin", b"x" * 600)
    assert not (session.workdir / "b.bin").exists()
    session.save_upload("c.bin", b"x" * 400)
    session.shutdown()
