"""Kernels on a real Jupyter Kernel Gateway (127.0.0.1, with a token), side by side with local kernels.

One gateway process serves the module. The behaviour tests run on a local (unconfined)
kernel and on a gateway kernel alike; the rest is about the gateway: its kernels are
deleted, outages are survived, bad settings are explained.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

import kernel
import kernel.gateway
import ui.model
from glm_client import INTERPRETER, ToolCall
from glm_client.config import ConfigError, Settings
from glm_client.testing import ScriptedClient
from kernel import KernelSession, shutdown_idle
from kernel.collector import OutputCollector
from kernel.gateway import GatewayConfig, GatewayKernelSession
from kernel.limits import INTERRUPT_GRACE_S
from sandbox import SandboxChoice

pytestmark = pytest.mark.kernel

TOKEN = "test-token-6c1f0e"
UNCONFINED = SandboxChoice("none", "unconfined in this test")
PLOT = (
    "import matplotlib.pyplot as plt\n"
    "print('before')\n"
    "plt.plot([1, 2, 3]); plt.show()\n"
    "print('after', flush=True)\n"
    "display('shown')\n"
    "6 * 7\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


class Gateway:
    """A jupyter-kernelgateway process that can be stopped and started again on the same port and token."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.directory = directory
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KERNEL_GATEWAY_", "KG_"))}
        env.update(KG_AUTH_TOKEN=TOKEN, KG_LIST_KERNELS="True")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kernel_gateway",
                "--KernelGatewayApp.ip=127.0.0.1",
                f"--KernelGatewayApp.port={self.port}",
            ],
            cwd=self.directory,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "gateway.log").open("ab"),
        )
        if not wait_until(self.answers, 60):
            self.stop()
            pytest.fail("the kernel gateway did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def answers(self) -> bool:
        try:
            httpx.get(f"{self.url}/api", timeout=1)  # 401 without the token: it answers
            return True
        except httpx.HTTPError:
            return False

    def kernels(self) -> list[str]:
        response = httpx.get(f"{self.url}/api/kernels", headers={"Authorization": f"token {TOKEN}"}, timeout=10)
        response.raise_for_status()
        return [kernel["id"] for kernel in response.json()]

    def config(self, **changes: object) -> GatewayConfig:
        return GatewayConfig(**{"url": self.url, "token": TOKEN, "connect_timeout_s": 5.0, **changes})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    server = Gateway(tmp_path_factory.mktemp("gateway"))
    server.start()
    yield server
    leftover = server.kernels()  # every session of the module has been shut down by now
    server.stop()
    assert leftover == [], "kernels were left on the gateway"


@pytest.fixture(scope="module", params=["local", "gateway"])
def make_session(request: pytest.FixtureRequest) -> Callable[..., KernelSession]:
    """Builds a session of this run's kind: a local kernel, or one on the gateway."""
    if request.param == "local":
        return lambda workdir=None: KernelSession(workdir, sandbox=UNCONFINED)
    server = request.getfixturevalue("gateway")
    return lambda workdir=None: GatewayKernelSession(workdir, gateway=server.config())


@pytest.fixture(scope="module")
def session(make_session: Callable[..., KernelSession]) -> Iterator[KernelSession]:
    with make_session() as shared:
        yield shared


# -- the same behaviour, local and on the gateway ------------------------------------------------


def test_outputs_arrive_in_order_with_plots(session: KernelSession) -> None:
    result = session.execute(PLOT)
    assert result.status == "ok", result.to_observation()
    kinds = [(output.kind, output.text if output.png is None else "png") for output in result.outputs]
    assert kinds == [
        ("stream", "before\n"),
        ("display", "png"),
        ("stream", "after\n"),
        ("display", "'shown'"),
        ("result", "42"),
    ]
    assert result.images[0].startswith(b"\x89PNG")
    assert result.execution_count is not None


def test_timeout_interrupts_and_keeps_variables(session: KernelSession) -> None:
    session.execute("kept = 'still here'")
    result = session.execute("while True:\n    pass", timeout=2)
    assert result.status == "timeout"
    assert "Execution timed out after 2 s and was interrupted" in result.text
    assert session.execute("print(kept)").text == "still here\n"


def test_timeout_restarts_a_kernel_that_ignores_the_interrupt(session: KernelSession) -> None:
    result = session.execute(
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)", timeout=1
    )
    assert result.status == "timeout"
    assert "restarted" in result.text
    assert result.duration_s < 1 + INTERRUPT_GRACE_S + 15
    assert session.execute("print('back')").text == "back\n"


def test_restart_from_another_thread_stops_running_code(session: KernelSession) -> None:
    def restart_while_busy() -> None:
        wait_until(lambda: session.busy)
        time.sleep(0.5)
        session.restart()

    thread = threading.Thread(target=restart_while_busy)
    thread.start()
    result = session.execute("import time\ntime.sleep(30)")
    thread.join()
    assert result.status == "died" and "restarted while the code ran" in result.text
    assert session.execute("1 + 1").text == "2"


def test_kernel_death_is_reported_and_the_kernel_restarted(session: KernelSession) -> None:
    session.execute("lost = 1")
    result = session.execute("print('last words', flush=True)\nimport os; os._exit(1)", timeout=30)
    assert result.status == "died"
    assert "The kernel died" in result.text and "restarted" in result.text
    assert session.is_alive()
    assert session.execute("lost").error.ename == "NameError"


def test_kernel_dying_between_executions_is_revived(session: KernelSession) -> None:
    session.execute("import os, threading; threading.Timer(0.3, os._exit, (1,)).start()")
    assert wait_until(lambda: not session.is_alive(), 15)
    result = session.execute("print('fresh')")
    assert result.status == "ok", result.text
    assert result.outputs[0].name == "stderr" and "since the last execution and was restarted" in result.outputs[0].text
    assert result.outputs[-1].text == "fresh\n"


def test_input_is_refused_and_output_capped(session: KernelSession) -> None:
    refused = session.execute("name = input('Your name? ')", timeout=20)
    assert refused.status == "error" and "input() is not available" in refused.to_observation()
    # Small sizes: a gateway also drops IOPub output beyond its own rate limit (1 MB/s by default).
    limit, session.max_output_chars = session.max_output_chars, 50_000
    try:
        big = session.execute("print('x' * 200_000)")
    finally:
        session.max_output_chars = limit
    assert "[Output truncated: 150001 more characters" in big.text and len(big.text) < 50_100


def test_uploads_and_downloads_through_the_kernel(session: KernelSession, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel.gateway, "FILE_CHUNK_BYTES", 4096)  # several chunks each way
    data = bytes(range(256)) * 50
    path = session.save_upload("../../etc/my data.bin", data)
    assert path.name == "my data.bin" and path.parent == session.workdir
    assert session.execute("print(len(open('my data.bin', 'rb').read()))").text == f"{len(data)}\n"
    before = session.files_snapshot()
    session.execute("import os; os.makedirs('out', exist_ok=True); open('out/result.txt', 'w').write('done')")
    assert session.workdir / "out" / "result.txt" in session.new_files_since(before)
    listed = session.list_files()
    assert session.workdir / "my data.bin" in listed
    assert session.read_file(session.workdir / "my data.bin", len(data)) == data
    with pytest.raises(ValueError, match="larger than"):
        session.read_file(session.workdir / "my data.bin", 100)
    with pytest.raises(ValueError, match="limited to"):
        session.save_upload("big.bin", b"x" * 2000, max_bytes=1000)
    session.execute("import os; os.makedirs('folder.csv', exist_ok=True)")
    with pytest.raises(ValueError, match="A folder named"):
        session.save_upload("folder.csv", b"a,b")
    session.execute("import os; os.symlink('/etc/passwd', 'link.txt')")
    assert session.workdir / "link.txt" not in session.list_files()
    with pytest.raises((OSError, ValueError)):
        session.read_file(session.workdir / "link.txt", 10_000)


def test_two_sessions_are_isolated(session: KernelSession, make_session: Callable[..., KernelSession]) -> None:
    session.execute("secret = 'mine'")
    with make_session() as other:
        assert other.execute("secret").error.ename == "NameError"
        assert other.cwd != session.cwd
        other.execute("open('theirs.txt', 'w').write('x')")
        assert session.workdir / "theirs.txt" not in session.list_files()


def test_idle_sessions_are_reaped_and_prewarm_starts_the_kernel(make_session: Callable[..., KernelSession]) -> None:
    idle = make_session()
    idle.start()  # pre-warm
    assert idle.is_alive() and not idle.holds_state
    idle.last_used -= 3600
    assert idle in shutdown_idle(600)
    assert idle.closed and not idle.is_alive()


# -- the gateway only -----------------------------------------------------------------------------


def test_shutdown_deletes_the_remote_kernel(gateway: Gateway) -> None:
    with GatewayKernelSession(gateway=gateway.config()) as remote:
        remote.execute("1 + 1")
        kernel_id = remote.kernel_id
        assert kernel_id in gateway.kernels()
        remote.restart()
        assert remote.kernel_id != kernel_id and kernel_id not in gateway.kernels()
        last = remote.kernel_id
    assert last not in gateway.kernels()


def test_a_late_execute_result_after_idle_is_kept(gateway: Gateway) -> None:
    """The websocket may deliver a request's execute_result after its idle status: it still counts."""
    remote = GatewayKernelSession(gateway=gateway.config())
    channels = FakeChannels()
    remote._channels = channels  # type: ignore[assignment]
    parent = {"msg_id": "req"}
    for msg in (
        {"msg_type": "status", "content": {"execution_state": "busy"}},
        {"msg_type": "stream", "content": {"name": "stdout", "text": "printed\n"}},
        {"msg_type": "status", "content": {"execution_state": "idle"}},
        {"msg_type": "execute_result", "content": {"data": {"text/plain": "42"}, "execution_count": 1}},
    ):
        channels.iopub.put({**msg, "parent_header": parent})
    channels.shell.put({"msg_type": "execute_reply", "parent_header": parent, "content": {"status": "ok"}})
    collector = OutputCollector()
    assert remote._wait_for_idle("req", collector, time.monotonic() + 5) == "idle"
    assert [output.text for output in collector.finish()] == ["printed\n", "42"]
    remote._channels = None
    remote.shutdown()


class FakeChannels:
    def __init__(self) -> None:
        self.iopub: queue.Queue = queue.Queue()
        self.shell: queue.Queue = queue.Queue()
        self.closed = threading.Event()
        self.death = None

    def close(self) -> None:
        self.closed.set()


def test_the_gateway_going_away_and_coming_back(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path)  # a gateway of its own: the module's keeps its kernels
    gateway.start()
    remote = GatewayKernelSession(gateway=gateway.config())
    try:
        assert remote.execute("x = 1; x").text == "1"
        gateway.stop()
        away = remote.execute("print('hello')")
        assert away.status == "error"
        sentence = away.text.removeprefix("KernelUnavailable: ")
        assert sentence.startswith(f"The kernel gateway at 127.0.0.1:{gateway.port} cannot be reached")
        assert sentence.count(". ") == 0 and "\n" not in sentence  # one sentence
        assert "Traceback" not in away.text
        gateway.start()
        back = remote.execute("print('hello')")
        assert back.status == "ok", back.text
        assert back.outputs[-1].text == "hello\n"
        assert "restarted" in back.outputs[0].text  # the old kernel went with the gateway: said so
    finally:
        remote.shutdown()
        leftover = gateway.kernels() if gateway.process is not None else []
        gateway.stop()
    assert remote.kernel_id is None and leftover == []


def test_a_wrong_token_is_explained_without_echoing_it(gateway: Gateway) -> None:
    wrong = "wrong-token-93b2"
    remote = GatewayKernelSession(gateway=gateway.config(token=wrong))
    result = remote.execute("1 + 1")
    remote.shutdown()
    assert result.status == "error"
    assert "token" in result.text and "KERNEL_GATEWAY_TOKEN" in result.text
    assert wrong not in result.text and TOKEN not in result.text
    assert remote.problem is not None and wrong not in remote.problem


def test_an_unknown_kernel_name_lists_the_available_ones(gateway: Gateway) -> None:
    remote = GatewayKernelSession(gateway=gateway.config(kernel_name="julia-9"))
    result = remote.execute("1 + 1")
    remote.shutdown()
    assert result.status == "error"
    assert "no kernel named 'julia-9'" in result.text and "python3" in result.text


def test_kernel_session_follows_the_settings(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERNEL_GATEWAY_URL", gateway.url)
    monkeypatch.setenv("KERNEL_GATEWAY_TOKEN", TOKEN)
    with KernelSession() as remote:
        assert isinstance(remote, GatewayKernelSession) and remote.remote
        assert remote.execute("import os; os.getcwd()").text == repr(remote.cwd)
        assert TOKEN not in repr(remote)
    monkeypatch.delenv("KERNEL_GATEWAY_URL")
    local = KernelSession(sandbox=UNCONFINED)
    assert not isinstance(local, GatewayKernelSession)
    local.shutdown()


@pytest.mark.parametrize(
    "env",
    [
        {"KERNEL_GATEWAY_URL": "ftp://user:secret@host"},
        {"KERNEL_GATEWAY_WS_URL": "http://host"},
        {"KERNEL_GATEWAY_VALIDATE_CERT": "sometimes"},
        {"KERNEL_GATEWAY_CONNECT_TIMEOUT_S": "0"},
        {"KERNEL_GATEWAY_REQUEST_TIMEOUT_S": "soon"},
    ],
)
def test_bad_gateway_settings_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert "secret" not in str(error.value)


def test_gateway_settings_are_read() -> None:
    settings = Settings.from_env(
        {
            "KERNEL_GATEWAY_URL": "https://eg.example:8888/gateway/",
            "KERNEL_GATEWAY_TOKEN": "t",
            "KERNEL_GATEWAY_VALIDATE_CERT": "false",
            "KERNEL_GATEWAY_WS_URL": "wss://proxy.example/gateway",
        }
    )
    config = GatewayConfig.from_settings(settings)
    assert config is not None and config.kernel_name == "python3"
    assert config.url == "https://eg.example:8888/gateway" and not config.validate_cert
    assert config.websocket_base == "wss://proxy.example/gateway"
    assert "kernel_gateway_token" not in repr(settings)
    assert GatewayConfig(url="https://eg.example").websocket_base == "wss://eg.example"


# -- the Code Interpreter page on the gateway ------------------------------------------------------

PAGE = str(Path(__file__).resolve().parent.parent / "modes" / "code_interpreter.py")


@pytest.fixture
def gateway_page(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], tuple]]:
    def open_page(url: str) -> tuple:
        monkeypatch.setenv("DATA_DIR", str(tmp_path))
        monkeypatch.setenv("KERNEL_GATEWAY_URL", url)
        monkeypatch.setenv("KERNEL_GATEWAY_TOKEN", TOKEN)
        monkeypatch.setenv("KERNEL_GATEWAY_CONNECT_TIMEOUT_S", "2")
        ui.model.settings.clear()
        client = ScriptedClient()
        monkeypatch.setattr(ui.model, "get_client", lambda _name=None: client)
        app = AppTest.from_file(PAGE, default_timeout=120)
        app.run()
        return app, client

    yield open_page
    kernel.shutdown_all()
    ui.model.settings.clear()


def test_the_page_runs_code_on_the_gateway(gateway: Gateway, gateway_page: Callable[[str], tuple]) -> None:
    before = set(gateway.kernels())  # the module's shared session may hold one
    app, client = gateway_page(gateway.url)
    code = "import matplotlib.pyplot as plt\nprint('before')\nplt.plot([1, 4, 9])\nplt.show()\nopen('report.csv', 'w').write('a\\n')"
    client.queue([ToolCall(INTERPRETER, {"code": code})], "Done.")
    app.chat_input(key="code_interpreter_input").set_value("Plot and save").run()
    assert not app.exception
    observation = client.requests[1][0][-1]
    assert observation.content.startswith("before\n[Image]") and observation.images[0].startswith(b"\x89PNG")
    assert any("kernel gateway at 127.0.0.1" in caption.value for caption in app.sidebar.caption)
    app.run()
    assert any(button.label == "⬇️ report.csv" for button in app.get("download_button"))
    assert not app.error and not app.warning
    assert len(set(gateway.kernels()) - before) == 1  # the page's kernel, on the gateway


def test_the_page_says_in_one_sentence_that_the_gateway_is_down(gateway_page: Callable[[str], tuple]) -> None:
    app, client = gateway_page(f"http://127.0.0.1:{free_port()}")
    client.queue([ToolCall(INTERPRETER, {"code": "1 + 1"})], "It did not run.")
    app.chat_input(key="code_interpreter_input").set_value("Add").run()
    assert not app.exception
    observation = client.requests[1][0][-1]
    assert observation.is_error and "cannot be reached" in observation.content
    app.run()
    assert len(app.error) == 1 and "cannot be reached" in app.error[0].value
