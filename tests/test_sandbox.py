"""Escapes from the Code Interpreter's sandbox, tried with real kernels in real bubblewrap sandboxes.

Each escape is tried with the sandbox on, where it must fail, and, where that is safe, with
it off, where the same attempt must succeed: the proof that the test can see the escape.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import sandbox.policy
from kernel import KernelSession, KernelUnavailable
from sandbox import Confinement, Limits, SandboxChoice, bwrap_command, bwrap_problem, choose_sandbox
from tools import dispatch_tool
from tools.workspace import tool_workdir

pytestmark = pytest.mark.kernel

ON = SandboxChoice("bwrap")
OFF = SandboxChoice("none", "unconfined in this test")
# Skipped only where bubblewrap is not installed; installed but unable to start is a failure (see below).
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture(scope="module", params=[pytest.param(ON, marks=needs_bwrap, id="on"), pytest.param(OFF, id="off")])
def choice(request: pytest.FixtureRequest) -> SandboxChoice:
    return request.param


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Secrets planted where the app keeps its data, in a home directory and in another session's workspace."""
    root = tmp_path_factory.mktemp("host")
    data = root / "data"
    other = data / "workspaces" / "other-session"
    home = root / "home"
    for directory in (other, home):
        directory.mkdir(parents=True)
    (data / "conversations.sqlite3").write_text("SECRET conversations")
    (home / "secret.txt").write_text("SECRET home")
    (other / "notes.txt").write_text("SECRET other session")
    return {"data": data, "home": home, "other": other, "mine": data / "workspaces" / "mine"}


@pytest.fixture(scope="module")
def kernel(choice: SandboxChoice, host: dict[str, Path]) -> Iterator[KernelSession]:
    with KernelSession(host["mine"], sandbox=choice) as session:
        yield session


def run(kernel: KernelSession, code: str) -> str:
    result = kernel.execute(code, timeout=30)
    assert result.status == "ok", result.text
    return result.text


def test_secrets_of_the_host_cannot_be_read(kernel: KernelSession, host: dict[str, Path]) -> None:
    paths = [host["data"] / "conversations.sqlite3", host["home"] / "secret.txt", host["other"] / "notes.txt"]
    code = "def read(path):\n    try:\n        return open(path).read()\n    except OSError as error:\n        return type(error).__name__\n"
    read = [eval(run(kernel, code + f"read({str(path)!r})")) for path in paths]
    if kernel.sandbox.sandboxed:
        assert read == ["FileNotFoundError"] * 3
    else:
        assert read == ["SECRET conversations", "SECRET home", "SECRET other session"]


def test_other_workspaces_cannot_be_listed(kernel: KernelSession, host: dict[str, Path]) -> None:
    workspaces = str(host["data"] / "workspaces")
    listing = run(
        kernel,
        f"import os\ntry:\n    print(sorted(os.listdir({workspaces!r})))\nexcept OSError as e:\n    print(type(e).__name__)",
    )
    assert listing == ("FileNotFoundError\n" if kernel.sandbox.sandboxed else "['mine', 'other-session']\n")


def test_nothing_outside_the_workdir_and_tmp_is_writable(kernel: KernelSession, host: dict[str, Path]) -> None:
    targets = [
        str(host["data"] / "planted.txt"),
        "/planted.txt",
        "/usr/planted.txt",
        str(Path(sys.prefix) / "planted.txt"),
    ]
    code = (
        "import os\nwritten = []\n"
        f"for path in {targets!r}:\n"
        "    try:\n        open(path, 'w').write('x'); written.append(path)\n    except OSError:\n        pass\n"
        "open('/tmp/private.txt', 'w').write('tmp'); open('kept.txt', 'w').write('data')\nwritten"
    )
    written = eval(run(kernel, code))
    assert (kernel.workdir / "kept.txt").read_text() == "data"  # /mnt/data is the session's directory
    if kernel.sandbox.sandboxed:
        assert written == []
        assert not Path("/tmp/private.txt").exists()  # the sandbox's /tmp is its own
    else:
        assert str(host["data"] / "planted.txt") in written
        for path in written:
            os.unlink(path)
        os.unlink("/tmp/private.txt")


def test_no_network_not_even_loopback(kernel: KernelSession) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]
    outcome = run(
        kernel,
        "import socket\n"
        f"try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3); print('connected')\n"
        "except OSError as error:\n    print(type(error).__name__)\n"
        "try:\n    socket.getaddrinfo('localhost', 80); print('resolved')\n"
        "except OSError as error:\n    print(type(error).__name__)",
    )
    try:
        connection, _ = server.accept()
        connection.close()
        accepted = True
    except TimeoutError:
        accepted = False
    server.close()
    if kernel.sandbox.sandboxed:
        assert not accepted
        assert outcome == "ConnectionRefusedError\ngaierror\n"
    else:
        assert accepted and outcome == "connected\nresolved\n"


def test_the_app_process_is_invisible_and_cannot_be_signalled(kernel: KernelSession) -> None:
    app = os.getpid()
    code = (
        "import os\n"
        f"try:\n    os.kill({app}, 0); print('signalled')\nexcept OSError as error:\n    print(type(error).__name__)\n"
        f"print(os.path.exists('/proc/{app}'), len([p for p in os.listdir('/proc') if p.isdigit()]))"
    )
    signalled, visible = run(kernel, code).splitlines()
    if kernel.sandbox.sandboxed:
        assert signalled == "ProcessLookupError"
        assert visible.split()[0] == "False" and int(visible.split()[1]) < 10  # bwrap's init, the kernel, its helpers
    else:
        assert signalled == "signalled" and visible.split()[0] == "True"


def test_code_runs_as_an_unprivileged_user_without_capabilities(kernel: KernelSession) -> None:
    uid, caps = run(
        kernel, "import os\nprint(os.getuid())\nprint(open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    ).split()
    if kernel.sandbox.sandboxed:
        assert int(uid) != 0 and int(caps, 16) == 0
    else:
        assert int(uid) == os.getuid()


def test_uploads_and_results_cross_through_mnt_data(kernel: KernelSession) -> None:
    kernel.save_upload("input.csv", b"a,b\n1,2\n")
    code = "import pandas as pd\ndf = pd.read_csv('input.csv')\ndf.assign(c=df.a + df.b).to_csv('output.csv', index=False)\nimport os\nos.getcwd()"
    assert run(kernel, code) == repr(kernel.cwd)
    assert (kernel.workdir / "output.csv").read_text() == "a,b,c\n1,2,3\n"
    assert kernel.workdir / "output.csv" in kernel.list_files()
    assert run(kernel, "open('input.csv', 'a').write('3,4\\n')\nopen('input.csv').read()") == repr("a,b\n1,2\n3,4\n")


@needs_bwrap
def test_a_file_stops_at_the_size_limit(tmp_path: Path) -> None:
    with KernelSession(tmp_path / "work", sandbox=ON) as kernel:
        result = kernel.execute(
            "chunk = b'x' * 2**20\nwritten = 0\n"
            "try:\n    with open('big.bin', 'wb') as f:\n        for _ in range(10 * 1024):  # 10 GiB\n"
            "            f.write(chunk); written += len(chunk)\nexcept OSError as error:\n    print(error.strerror)\nwritten",
            timeout=120,
        )
        assert result.text.splitlines() == ["File too large", str(Limits().max_file_bytes)]
        assert (kernel.workdir / "big.bin").stat().st_size <= Limits().max_file_bytes


@needs_bwrap
def test_a_fork_bomb_is_contained_while_the_app_and_other_sessions_answer(tmp_path: Path) -> None:
    bomb = (
        "import os, time\nkernel = os.getpid()\n"
        "for _ in range(11):  # 2048 processes if nothing stops them\n"
        "    try:\n        os.fork()\n    except OSError:\n        open('/tmp/fork-failed', 'w').close()\n"
        "time.sleep(4)\nif os.getpid() != kernel:\n    os._exit(0)\nprint(os.path.exists('/tmp/fork-failed'))"
    )
    with KernelSession(tmp_path / "a", sandbox=ON) as bombed, KernelSession(tmp_path / "b", sandbox=ON) as neighbour:
        neighbour.start()
        results = []
        thread = threading.Thread(target=lambda: results.append(bombed.execute(bomb, timeout=60)))
        thread.start()
        time.sleep(2)  # the bomb is at its limit now
        peak = len(psutil.Process(bombed.pid).children(recursive=True))
        started = time.monotonic()
        answer = neighbour.execute("6 * 7", timeout=20)
        neighbour_latency = time.monotonic() - started
        thread.join()
        assert peak <= Limits().max_processes + 1  # bwrap's init is counted outside the sandbox's uid
        assert (answer.status, answer.text) == ("ok", "42")
        assert neighbour_latency < 5
        # Any process of the bomb may meet the limit: the kernel often makes its 11 forks before its children make theirs.
        assert results[0].text == "True\n"
        assert bombed.execute("print('alive')").text == "alive\n"


@needs_bwrap
def test_a_kernel_started_from_a_thread_outlives_that_thread(tmp_path: Path) -> None:
    """bwrap's parent-death signal follows the thread that spawned it: pre-warm threads end at once."""
    session = KernelSession(tmp_path / "work", sandbox=ON)
    prewarm = threading.Thread(target=session.start)
    prewarm.start()
    prewarm.join()
    time.sleep(0.5)
    try:
        assert session.is_alive()
        result = session.execute("1 + 1")
        assert [output.text for output in result.outputs] == ["2"]  # no "the kernel died" note before it
    finally:
        session.shutdown()


@needs_bwrap
def test_the_unprivileged_variant_maps_nobody_in_a_user_namespace(tmp_path: Path) -> None:
    """What an app that does not run as root gets: no uid switch, a user namespace instead (tried here as root)."""
    code = "import os; print(os.getuid(), os.getcwd(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"
    command = bwrap_command(Confinement(tmp_path, Limits(), host_uid=None), [sys.executable, "-c", code])
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 0, finished.stderr
    uid, cwd, caps = finished.stdout.split()
    assert (int(uid), cwd, int(caps, 16)) == (65534, "/mnt/data", 0)


@needs_bwrap
def test_bwrap_starts_a_sandbox_where_it_is_installed() -> None:
    assert bwrap_problem() is None


@needs_bwrap
def test_a_venv_under_tmp_is_visible_in_the_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The private /tmp must not hide a Python that lives under the host's /tmp (CI clones there)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    assert str(venv).startswith("/tmp/")
    monkeypatch.setattr(sys, "executable", str(venv / "bin" / "python"))
    monkeypatch.setattr(sys, "prefix", str(venv))
    workdir = tmp_path / "work"
    workdir.mkdir()
    command = bwrap_command(
        Confinement(workdir, Limits(), host_uid=None), [sys.executable, "-c", "import sys; print(sys.prefix)"]
    )
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert (finished.returncode, finished.stdout.strip()) == (0, str(venv)), finished.stderr


# --- choosing the sandbox ---------------------------------------------------------------------


@pytest.fixture
def no_bwrap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A PATH without bwrap, as on a machine where it is not installed."""
    monkeypatch.setenv("PATH", str(tmp_path))
    sandbox.policy.bwrap_problem.cache_clear()
    yield
    sandbox.policy.bwrap_problem.cache_clear()


def test_auto_falls_back_to_unconfined_and_says_why(no_bwrap: None, caplog: pytest.LogCaptureFixture) -> None:
    sandbox.policy._warn_once.cache_clear()
    choice = choose_sandbox("auto", shared=False)
    assert choice.mode == "none"
    assert "Code runs unconfined" in choice.reason and "apt-get install bubblewrap" in choice.reason
    assert choice.reason in caplog.text


def test_a_shared_app_without_a_sandbox_refuses_to_run_code(no_bwrap: None, tmp_path: Path) -> None:
    choice = choose_sandbox("auto", shared=True)
    assert choice.mode == "refused"
    assert "APP_PASSWORD is set" in choice.reason and "KERNEL_SANDBOX=none" in choice.reason
    kernel = KernelSession(tmp_path / "work", sandbox=choice)
    result = kernel.execute("open('ran.txt', 'w').write('1')")
    assert result.status == "error" and result.error is not None and result.error.ename == "KernelUnavailable"
    assert "apt-get install bubblewrap" in result.text
    assert kernel.pid is None and not (kernel.workdir / "ran.txt").exists()
    with pytest.raises(KernelUnavailable, match="APP_PASSWORD"):
        kernel.start()
    kernel.shutdown()
    assert choose_sandbox("none", shared=True).mode == "none"  # the operator's explicit choice
    assert choose_sandbox("bwrap", shared=False).mode == "refused"  # asked for, not available: fail closed


def test_kernel_session_follows_the_settings(monkeypatch: pytest.MonkeyPatch, no_bwrap: None, tmp_path: Path) -> None:
    monkeypatch.setenv("APP_PASSWORD", "team")
    assert KernelSession(tmp_path / "a").sandbox.mode == "refused"
    monkeypatch.setenv("KERNEL_SANDBOX", "none")
    assert KernelSession(tmp_path / "b").sandbox.mode == "none"


# --- the shell tool ---------------------------------------------------------------------------


@needs_bwrap
def test_the_shell_tool_runs_in_the_sandbox_over_the_session_workdir(
    monkeypatch: pytest.MonkeyPatch, host: dict[str, Path], tmp_path: Path
) -> None:
    monkeypatch.setenv("ENABLE_SHELL_TOOL", "1")
    monkeypatch.setenv("SHELL_SECRET_TOKEN", "do-not-leak")
    monkeypatch.setenv("KERNEL_MEMORY_MB", "1536")
    workdir = tmp_path / "session"
    workdir.mkdir()
    with tool_workdir(workdir):
        result = dispatch_tool(
            "shell",
            {
                "command": f"pwd; echo made > made.txt; cat {host['home'] / 'secret.txt'}; "
                "env | grep -c SECRET_TOKEN; ulimit -v"
            },
        )
    assert result.ok, result.text
    lines = result.text.splitlines()
    assert lines[1] == "/mnt/data"
    assert "No such file or directory" in lines[2]
    assert lines[3] == "0"
    assert lines[4] == str(1536 * 1024)  # KiB: the kernel's memory setting caps the shell too
    assert (workdir / "made.txt").read_text() == "made\n"
