"""The app's web surface seen by a hostile page or client: DNS rebinding, error details, unauthenticated endpoints."""

from __future__ import annotations

import socket
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit import config as streamlit_config
from test_browser import App
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    running = App(tmp_path_factory.mktemp("data"), env={"APP_PASSWORD": "team secret"}).start()
    yield running
    running.stop()


def open_websocket(app: App, host: str) -> None:
    """Open the app's websocket with `host` as Host and Origin, as a rebound page's browser would."""
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=10)
    uri = f"ws://{host}:{app.port}/_stcore/stream"
    with connect(uri, sock=sock, origin=f"http://{host}:{app.port}", open_timeout=10):  # type: ignore[arg-type]
        pass


def test_the_app_watches_no_files() -> None:
    """A watcher on the repo (.venv included) flooded the log with inotify overflows; nothing relies on reruns on save."""
    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert config["server"].get("runOnSave", False) is False
    assert "server.fileWatcherType" in streamlit_config.get_config_options()  # a name Streamlit reads


def test_script_runs_end_without_a_full_garbage_collection() -> None:
    """A full collection holds the GIL for ~225 ms in the app's process: the decode thread, and every user, wait."""
    config = tomllib.loads((Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["runner"]["postScriptGC"] is False
    assert "runner.postScriptGC" in streamlit_config.get_config_options()  # a name Streamlit reads


def test_a_rebound_host_name_cannot_open_the_app(app: App) -> None:
    open_websocket(app, "127.0.0.1")  # the app's own name works
    open_websocket(app, "localhost")
    with pytest.raises(InvalidStatus) as refused:
        open_websocket(app, "rebind.attacker.example")
    assert refused.value.response.status_code in (400, 403)


def test_media_and_uploads_without_a_session_get_nothing(app: App) -> None:
    """What an unauthenticated client gets: no media without knowing its content hash, no upload without a session."""
    for method, path in [
        ("GET", "/media/0123456789abcdef0123456789abcdef0123456789abcdef01234567.png"),
        ("PUT", "/_stcore/upload_file/no-such-session/no-such-file"),
    ]:
        request = urllib.request.Request(f"{app.url}{path}", method=method, data=b"x" if method == "PUT" else None)
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=10)
        assert denied.value.code in (400, 403, 404), (method, path, denied.value.code)
