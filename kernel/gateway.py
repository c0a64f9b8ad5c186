"""GatewayKernelSession: a KernelSession whose kernel runs on a Jupyter Kernel Gateway or Enterprise Gateway.

The kernel is started and stopped over REST (/api/kernels), and spoken to over the
websocket channels (/api/kernels/<id>/channels), as jupyter_server's GatewayClient does:
messages are built by jupyter_client's Session and sent as JSON, the gateway signs them
towards the kernel. Everything else (collecting outputs, limits, timeouts, restarts,
notes to the user) is KernelSession's own code; this module only supplies the transport.

Files go through the kernel: uploads are written by small private cells in chunks,
listings and downloads read the same way, in a working directory on the remote side
(REMOTE_WORKDIR_ROOT/<name>, 0700), so one pod per kernel (Enterprise Gateway on
Kubernetes) needs no shared volume.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import websocket
from jupyter_client.jsonutil import json_default
from jupyter_client.session import Session

from glm_client.config import Settings
from kernel import files, registry
from kernel.limits import (
    DEFAULT_MEMORY_LIMIT,
    KERNEL_START_TIMEOUT_S,
    MAX_LISTED_FILES,
    MAX_RESULT_TEXT_CHARS,
    MAX_SCANNED_ENTRIES,
    MAX_SESSION_UPLOAD_BYTES,
    MAX_UPLOAD_BYTES,
    MiB,
)
from kernel.process import INLINE_BACKEND
from kernel.result import Output
from kernel.session import KernelSession, KernelUnavailable
from sandbox import SandboxChoice

# Where a session's files live on the kernel's side; one folder per conversation (or session).
REMOTE_WORKDIR_ROOT = "/tmp/glm-workbench"
# Uploads and downloads move in pieces of this size (base64 in a cell's code or output).
FILE_CHUNK_BYTES = 4 * MiB
# How long a private cell (file transfer, listing) may take.
PRIVATE_CELL_TIMEOUT_S = 60.0
# After idle, how long to wait for the execute_reply: IOPub messages of the request that come
# behind idle (the websocket relays shell and IOPub apart) are collected until it arrives.
POST_IDLE_GRACE_S = 0.5
# Deleting a kernel the gateway is restarting fails for a moment; tries, half a second more apart each.
DELETE_ATTEMPTS = 5
# A listing for the page's download buttons must not hold a redraw for long.
LISTING_LOCK_WAIT_S = 0.5


class GatewayUnavailable(KernelUnavailable):
    """The gateway cannot be reached, refuses us, or cannot start the kernel. The message says which."""


class GatewayAuthError(GatewayUnavailable):
    """The gateway refused the token (HTTP 401)."""


@dataclass(frozen=True)
class GatewayConfig:
    """Where the gateway is and how to talk to it (KERNEL_GATEWAY_* settings)."""

    url: str
    token: str = field(default="", repr=False)
    kernel_name: str = "python3"
    ws_url: str = ""
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 60.0
    validate_cert: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig | None:
        if not settings.kernel_gateway_url:
            return None
        return cls(
            url=settings.kernel_gateway_url,
            token=settings.kernel_gateway_token,
            kernel_name=settings.kernel_gateway_kernel_name,
            ws_url=settings.kernel_gateway_ws_url,
            connect_timeout_s=settings.kernel_gateway_connect_timeout_s,
            request_timeout_s=settings.kernel_gateway_request_timeout_s,
            validate_cert=settings.kernel_gateway_validate_cert,
        )

    @property
    def host(self) -> str:
        """host:port for messages: never the credentials or the token."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    @property
    def websocket_base(self) -> str:
        if self.ws_url:
            return self.ws_url
        scheme, rest = self.url.split("://", 1)
        return ("wss" if scheme.lower() == "https" else "ws") + "://" + rest

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"} if self.token else {}


def configured_gateway() -> GatewayConfig | None:
    """The gateway the settings name (KERNEL_GATEWAY_URL), or None for local kernels."""
    return GatewayConfig.from_settings(Settings.from_env())


class _Channels:
    """One websocket to a kernel's channels, read by a thread into a queue per channel.

    A closed socket, or a status `restarting`/`dead` from the gateway (it saw the kernel
    die), ends the connection: `death` says which, and IOPub readers are woken.
    """

    def __init__(self, url: str, config: GatewayConfig) -> None:
        sslopt = {} if config.validate_cert else {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        self._ws = websocket.create_connection(
            url,
            header=config.headers(),
            timeout=config.connect_timeout_s,
            sslopt=sslopt,
            enable_multithread=True,
            suppress_origin=True,
        )
        self._ws.settimeout(None)
        self.iopub: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.shell: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed = threading.Event()
        self.death: str | None = None  # "restarting" or "dead" when the gateway reported the kernel gone
        self._thread = threading.Thread(target=self._read, name="gateway-kernel-channels", daemon=True)
        self._thread.start()

    def send(self, msg: dict[str, Any], channel: str) -> None:
        msg = dict(msg, channel=channel)
        try:
            self._ws.send(json.dumps(msg, default=json_default))
        except (OSError, websocket.WebSocketException):
            self._closed()

    def close(self) -> None:
        """Drop the connection at once (a waiting reader sees it closed)."""
        with contextlib.suppress(Exception):
            self._ws.abort()
        with contextlib.suppress(Exception):
            self._ws.close(timeout=0.5)
        self._closed()

    def _read(self) -> None:
        try:
            while True:
                raw = self._ws.recv()
                if not raw:
                    break
                _quick_ack(self._ws)
                msg = json.loads(raw)
                channel = msg.get("channel")
                if channel == "iopub":
                    state = msg["content"].get("execution_state") if msg.get("msg_type") == "status" else None
                    if state in ("restarting", "dead") and not msg.get("parent_header"):
                        self.death = state
                        break
                    self.iopub.put(msg)
                elif channel == "shell":
                    self.shell.put(msg)
        except Exception:  # closed by us or by the gateway, or a broken connection: all end it
            pass
        self._closed()

    def _closed(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.iopub.put(None)  # wakes a reader blocked on the queue


class GatewayKernelSession(KernelSession):
    """A KernelSession on a gateway: same methods, same results, same notes.

    `workdir` names the remote working directory (its last part); variables live in the
    remote kernel, files in REMOTE_WORKDIR_ROOT/<name> on its side. Memory and sandbox
    limits are the gateway's (on Kubernetes: the kernel pod's), not set here.
    """

    remote = True

    def __init__(
        self,
        workdir: Path | str | None = None,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT,
        max_output_chars: int = MAX_RESULT_TEXT_CHARS,
        sandbox: SandboxChoice | None = None,
        gateway: GatewayConfig | None = None,
    ) -> None:
        config = gateway or configured_gateway()
        if config is None:
            raise ValueError("GatewayKernelSession needs a gateway: set KERNEL_GATEWAY_URL or pass gateway=.")
        self.gateway = config
        name = Path(workdir).name if workdir is not None else f"session-{secrets.token_hex(8)}"
        self._owns_workdir = False  # nothing local to remove
        self._owns_remote_dir = workdir is None
        self.workdir = Path(REMOTE_WORKDIR_ROOT) / files.safe_filename(name)
        self.sandbox = sandbox or SandboxChoice(
            "none", f"Code runs on the kernel gateway at {config.host}; its isolation is the gateway's."
        )
        self.sandbox_uid = None
        self.memory_limit_bytes = memory_limit_bytes  # the gateway's kernels set their own limits
        self.upload_budget_bytes = MAX_SESSION_UPLOAD_BYTES
        self.max_output_chars = max_output_chars
        self.last_used = time.monotonic()
        self._lock = threading.Lock()
        self._signal_lock = threading.Lock()
        self._busy = False
        self._closed = False
        self._restart_requested = False
        self._generation = 0
        self._ran_generation = 0
        self._manager = None
        self._client = None
        self._runtime_dir = None
        self._session = Session(username="glm-workbench")
        self._http = httpx.Client(
            verify=config.validate_cert,
            timeout=httpx.Timeout(config.request_timeout_s, connect=config.connect_timeout_s),
            headers=config.headers(),
        )
        self._kernel_id: str | None = None
        self._channels: _Channels | None = None
        self._orphans: list[str] = []  # kernels we could not delete (gateway away): deleted when it returns
        self._listing: dict[Path, tuple[int, int]] = {}  # last listing: path -> (mtime_ns, size)
        self._lost: str | None = None  # why a kernel that held state is gone while none replaces it yet
        self.problem: str | None = None  # the last start failure, in one sentence; None once a kernel runs
        registry.register(self)

    # -- what differs from a local kernel ------------------------------------------------------

    @property
    def cwd(self) -> str:
        return str(self.workdir)

    @property
    def pid(self) -> int | None:
        return None  # the kernel's process is on another machine

    @property
    def kernel_id(self) -> str | None:
        """The gateway's id of the running kernel."""
        return self._kernel_id

    @property
    def connection_info(self) -> dict[str, Any]:
        return {"gateway": self.gateway.host, "kernel_id": self._kernel_id} if self._kernel_id else {}

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"kernel {self._kernel_id}" if self.is_alive() else "not running"
        return f"GatewayKernelSession(gateway={self.gateway.host!r}, workdir={self.cwd!r}, {state})"

    def is_alive(self) -> bool:
        channels = self._channels
        return channels is not None and not channels.closed.is_set()

    def interrupt(self) -> None:
        """Interrupt over REST, as the gateway's kernels expect (message or signal is its choice)."""
        kernel_id = self._kernel_id
        if kernel_id is None:
            return
        with self._signal_lock, contextlib.suppress(KernelUnavailable):
            self._request("POST", f"/api/kernels/{kernel_id}/interrupt", timeout=self.gateway.connect_timeout_s)

    def shutdown(self) -> None:
        if self._closed:
            return
        if self._owns_remote_dir and self._lock.acquire(blocking=False):
            try:
                if self.is_alive():
                    with contextlib.suppress(Exception):
                        self._run_private(_cell(_REMOVE_DIR, dir=json.dumps(self.cwd)), timeout=5.0)
            finally:
                self._lock.release()
        super().shutdown()
        self._http.close()

    # -- transport hooks used by KernelSession's execute ---------------------------------------

    def _send_execute(self, code: str) -> str:
        return self._send_request(code, silent=False)

    def _send_request(self, code: str, silent: bool) -> str:
        channels = self._channels
        assert channels is not None
        _drain(channels.shell)  # replies of earlier requests; outputs come from IOPub
        content = {
            "code": code,
            "silent": silent,
            "store_history": not silent,
            "user_expressions": {},
            "allow_stdin": False,  # input() fails at once, as locally
            "stop_on_error": False,
        }
        msg = self._session.msg("execute_request", content)
        channels.send(msg, "shell")
        return str(msg["header"]["msg_id"])

    def _next_iopub(self, timeout: float) -> dict[str, Any]:
        channels = self._channels
        if channels is None:
            raise queue.Empty
        msg = channels.iopub.get(timeout=timeout)
        if msg is None:
            channels.iopub.put(None)  # stays closed for the next reader
            raise queue.Empty
        return msg

    def _wait_for_idle(self, msg_id: str, collector: Any, deadline: float) -> Any:
        outcome = super()._wait_for_idle(msg_id, collector, deadline)
        if outcome == "idle":
            for msg in self._after_idle(msg_id):
                if msg["msg_type"] != "status":
                    collector.add(msg)
        return outcome

    def _after_idle(self, msg_id: str) -> list[dict[str, Any]]:
        """IOPub messages of `msg_id` that arrive after its idle status, up to its execute_reply.

        The kernel sends execute_result before execute_reply, and idle after both; but the
        gateway relays IOPub and shell on their own, and Enterprise Gateway's client has seen
        the result land after idle. The reply is the mark that everything was sent.
        """
        channels = self._channels
        late: list[dict[str, Any]] = []
        if channels is None:
            return late
        deadline = time.monotonic() + POST_IDLE_GRACE_S
        replied = False
        while not replied and time.monotonic() < deadline:
            try:
                reply = channels.shell.get(timeout=0.01)
                replied = reply.get("parent_header", {}).get("msg_id") == msg_id
            except queue.Empty:
                if channels.closed.is_set():
                    break
            late += _take_iopub(channels, msg_id)
        return late + _take_iopub(channels, msg_id)

    def _death_message(self) -> str:
        if self._restart_requested:
            return "The kernel was restarted while the code ran"
        channels = self._channels
        if channels is not None and channels.death:
            return f"The kernel died unexpectedly (the gateway reported it {channels.death})"
        state = self._remote_state()
        if state == "gone":
            return "The kernel died unexpectedly (the gateway no longer has it)"
        if state == "unreachable":
            return f"The kernel was lost with the gateway at {self.gateway.host} (unreachable)"
        return "The kernel's connection to the gateway closed unexpectedly"

    # -- starting and stopping -----------------------------------------------------------------

    def _ensure_started(self) -> Any:
        if self._closed:
            raise RuntimeError("This KernelSession was shut down; create a new one.")
        if self._kernel_id is None:
            if self._lost is not None:
                return self._revive()
            self._launch()
            return None
        if self.is_alive():
            return None
        channels = self._channels
        if (channels is None or channels.death is None) and self._remote_state() == "running":
            self._connect()  # only the connection dropped (a proxy's idle timeout, a blip): the kernel kept its state
            return None
        return self._revive()

    def _remote_state(self) -> str:
        """'running', 'gone' or 'unreachable' (the gateway's answer about our kernel)."""
        if self._kernel_id is None:
            return "gone"
        try:
            response = self._request("GET", f"/api/kernels/{self._kernel_id}", timeout=self.gateway.connect_timeout_s)
        except GatewayAuthError:
            raise
        except GatewayUnavailable:
            return "unreachable"
        return "running" if response.status_code == 200 else "gone"

    def _launch(self) -> None:
        try:
            self._delete_orphans()
            self._kernel_id = self._start_remote_kernel()
            self._generation += 1
            self._connect()
            self._run_private(_cell(_SETUP, dir=json.dumps(self.cwd)), timeout=KERNEL_START_TIMEOUT_S)
        except GatewayUnavailable as error:
            self._stop()
            self.problem = str(error)
            raise
        except Exception as error:
            self._stop()
            self.problem = f"The kernel on the gateway at {self.gateway.host} failed to start: {error}"
            raise GatewayUnavailable(self.problem) from error
        self.problem = None

    def _start_remote_kernel(self) -> str:
        name = self.gateway.kernel_name
        response = self._request("POST", "/api/kernels", json={"name": name})
        if response.status_code in (200, 201):
            return str(response.json()["id"])
        names = self._kernel_names()
        if name not in names:
            listed = ", ".join(names) or "none"
            raise GatewayUnavailable(
                f"The kernel gateway at {self.gateway.host} has no kernel named {name!r}; "
                f"it has: {listed}. Set KERNEL_GATEWAY_KERNEL_NAME to one of them."
            )
        raise GatewayUnavailable(
            f"The kernel gateway at {self.gateway.host} could not start a {name!r} kernel "
            f"(HTTP {response.status_code}: {_reason(response)})."
        )

    def _kernel_names(self) -> list[str]:
        response = self._request("GET", "/api/kernelspecs")
        if response.status_code != 200:
            return []
        return sorted(response.json().get("kernelspecs", {}))

    def _connect(self) -> None:
        """Open the channels and wait until the kernel answers (kernel_info), as wait_for_ready does."""
        if self._channels is not None:
            self._channels.close()
        url = f"{self.gateway.websocket_base}/api/kernels/{self._kernel_id}/channels?session_id={self._session.session}"
        try:
            channels = _Channels(url, self.gateway)
        except websocket.WebSocketBadStatusException as error:
            if error.status_code == 401:
                raise _auth_error(self.gateway) from None
            raise GatewayUnavailable(
                f"The kernel gateway at {self.gateway.host} refused the kernel's channels (HTTP {error.status_code})."
            ) from None
        except (OSError, websocket.WebSocketException) as error:
            raise _unreachable(self.gateway, error) from None
        self._channels = channels
        deadline = time.monotonic() + KERNEL_START_TIMEOUT_S
        while time.monotonic() < deadline and not channels.closed.is_set():
            msg = self._session.msg("kernel_info_request", {})
            channels.send(msg, "shell")
            if _reply_to(channels, str(msg["header"]["msg_id"]), 1.0) is not None:
                _drain(channels.iopub, keep_closed=True)  # the status messages of the handshake
                return
        raise GatewayUnavailable(f"The kernel on the gateway at {self.gateway.host} did not answer.")

    def _revive(self) -> Output:
        how = self._lost or self._death_message()
        self._lost = how  # kept if the relaunch fails: the note goes with the kernel that finally starts
        self._relaunch()
        self._lost = None
        text = f"[{how} since the last execution and was restarted; earlier variables and imports were lost.]\n"
        return Output(kind="stream", name="stderr", text=text)

    def _relaunch(self) -> None:
        self._stop()
        try:
            self._launch()
        except KernelUnavailable:
            self._lost = self._lost or "The kernel was lost while the gateway was away"
            raise

    def _stop(self) -> None:
        channels, kernel_id = self._channels, self._kernel_id
        self._channels, self._kernel_id = None, None
        if channels is not None:
            channels.close()
        if kernel_id is not None:
            self._orphans.append(kernel_id)
        with contextlib.suppress(KernelUnavailable):
            self._delete_orphans()

    def _kill(self) -> None:
        channels = self._channels
        if channels is not None:
            channels.close()

    def _delete_orphans(self) -> None:
        """Delete the kernels we stopped using; raises while the gateway is away (they are kept for later)."""
        while self._orphans:
            for attempt in range(DELETE_ATTEMPTS):
                # 204 deleted, 404 already gone; a kernel the gateway is restarting answers 500 for a moment.
                if self._request("DELETE", f"/api/kernels/{self._orphans[0]}").status_code in (204, 404):
                    break
                time.sleep(0.5 * (attempt + 1))
            self._orphans.pop(0)

    def _request(self, method: str, path: str, json: Any = None, timeout: float | None = None) -> httpx.Response:
        """A REST call; GatewayUnavailable (in words, without the token) if the gateway is away or refuses us."""
        try:
            response = self._http.request(
                method, self.gateway.url + path, json=json, timeout=timeout or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.HTTPError as error:
            raise _unreachable(self.gateway, error) from None
        if response.status_code == 401:
            raise _auth_error(self.gateway)
        return response

    # -- private cells: files through the kernel -----------------------------------------------

    def _run_private(self, code: str, timeout: float = PRIVATE_CELL_TIMEOUT_S) -> str:
        """Run `code` silently (no history, no count) and return its stdout; its error raised as ValueError/OSError.

        The caller holds the lock and the kernel runs.
        """
        channels = self._channels
        if channels is None:
            raise GatewayUnavailable("The kernel on the gateway is not running.")
        msg_id = self._send_request(code, silent=True)
        deadline = time.monotonic() + timeout
        stdout: list[str] = []
        while True:
            try:
                msg = self._next_iopub(max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise GatewayUnavailable(f"The kernel on the gateway at {self.gateway.host} did not answer.") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                stdout.append(msg["content"]["text"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                break
        reply = _reply_to(channels, msg_id, POST_IDLE_GRACE_S * 4)
        content = reply["content"] if reply is not None else {}
        if content.get("status") == "error":
            ename, evalue = content.get("ename", "Error"), content.get("evalue", "")
            if ename == "ValueError":
                raise ValueError(evalue)
            raise OSError(f"{ename}: {evalue}")
        return "".join(stdout)

    def _private(self, code: str) -> str:
        """A private cell, starting the kernel if needed: GatewayUnavailable if it cannot."""
        with self._lock:
            self._ensure_started()
            return self._run_private(code)

    def save_upload(self, name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
        """Write an upload into the remote working directory in chunks (sanitised name, same limits as locally).

        ValueError if it is too large, if a folder has its name, or if the gateway cannot be reached.
        """
        if len(data) > self.upload_budget_bytes:
            raise ValueError(
                f"File {name!r} does not fit: this session may upload {self.upload_budget_bytes:,} more bytes "
                f"({MAX_SESSION_UPLOAD_BYTES / 1e6:.0f} MB in all)."
            )
        files.check_upload_size(name, data, max_bytes)
        filename = files.safe_filename(name)
        partial = f".upload-{secrets.token_hex(8)}.part"
        chunks = [data[start : start + FILE_CHUNK_BYTES] for start in range(0, len(data), FILE_CHUNK_BYTES)] or [b""]
        try:
            with self._lock:
                self._ensure_started()
                for index, chunk in enumerate(chunks):
                    self._run_private(
                        _cell(
                            _WRITE_CHUNK,
                            dir=json.dumps(self.cwd),
                            part=json.dumps(partial),
                            name=json.dumps(filename),
                            data=json.dumps(base64.b64encode(chunk).decode()),
                            first=index == 0,
                            last=index == len(chunks) - 1,
                        )
                    )
        except KernelUnavailable as error:
            raise ValueError(str(error)) from None
        except OSError as error:
            if "IsADirectoryError" in str(error):
                raise ValueError(f"A folder named {filename!r} is in the working directory; rename the file.") from None
            raise
        self.upload_budget_bytes -= len(data)
        return self.workdir / filename

    def list_files(self) -> list[Path]:
        """Files of the remote working directory; the last listing while the kernel is busy or away."""
        if self._kernel_id is None or not self._lock.acquire(timeout=LISTING_LOCK_WAIT_S):
            return list(self._listing)
        try:
            if self.is_alive():
                listing = json.loads(self._run_private(_cell(_LIST, dir=json.dumps(self.cwd))))
                self._listing = {self.workdir / rel: (mtime, size) for rel, mtime, size in listing}
        except (KernelUnavailable, OSError, ValueError):
            pass
        finally:
            self._lock.release()
        return list(self._listing)

    def file_size(self, path: Path) -> int:
        if path not in self._listing:
            raise FileNotFoundError(path)
        return self._listing[path][1]

    def read_file(self, path: Path, max_bytes: int) -> bytes:
        """A remote file in chunks, never through a link; ValueError/OSError if not a regular file or too large."""
        parts = list(path.relative_to(self.workdir).parts)
        if not parts or any(part in (".", "..") for part in parts):
            raise ValueError(f"{path.name} is not a file of the working directory.")
        data = bytearray()
        while True:
            code = _cell(
                _READ_CHUNK,
                dir=json.dumps(self.cwd),
                parts=json.dumps(parts),
                offset=len(data),
                chunk=FILE_CHUNK_BYTES,
                max_bytes=max_bytes,
            )
            try:
                chunk = base64.b64decode(self._private(code))
            except KernelUnavailable as error:
                raise OSError(str(error)) from None
            data += chunk
            if len(data) > max_bytes:
                raise ValueError(f"{path.name} is larger than {max_bytes:,} bytes.")
            if len(chunk) < FILE_CHUNK_BYTES:
                return bytes(data)

    def files_snapshot(self) -> files.FileSnapshot:
        self.list_files()
        return dict(self._listing)

    def new_files_since(self, snapshot: files.FileSnapshot) -> list[Path]:
        self.list_files()
        return [path for path, state in self._listing.items() if snapshot.get(path) != state]


def _quick_ack(ws: websocket.WebSocket) -> None:
    """Acknowledge received data at once (Linux's TCP_QUICKACK, which lapses, so after every read).

    The gateway's tornado websocket leaves Nagle's algorithm on: a burst of small IOPub
    messages waits for our ACK, which a delayed ACK holds back up to 40 ms, and each
    round trip paid that (50 ms against 16 ms locally; measured with bench/bench_kernel.py).
    """
    if _TCP_QUICKACK is not None and ws.sock is not None:
        with contextlib.suppress(OSError):
            ws.sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


def _drain(channel: queue.Queue, keep_closed: bool = False) -> None:
    closed = False
    with contextlib.suppress(queue.Empty):
        while True:
            closed |= channel.get_nowait() is None
    if closed and keep_closed:
        channel.put(None)


def _take_iopub(channels: _Channels, msg_id: str) -> list[dict[str, Any]]:
    """IOPub messages of `msg_id` already received (others are left over from earlier requests)."""
    taken = []
    with contextlib.suppress(queue.Empty):
        while True:
            msg = channels.iopub.get_nowait()
            if msg is None:
                channels.iopub.put(None)
                break
            if msg["parent_header"].get("msg_id") == msg_id:
                taken.append(msg)
    return taken


def _reply_to(channels: _Channels, msg_id: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            reply = channels.shell.get(timeout=min(remaining, 0.1))
        except queue.Empty:
            if channels.closed.is_set():
                return None
            continue
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            return reply
    return None


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase
    return str(body.get("message") or body.get("reason") or response.reason_phrase)[:200]


def _auth_error(config: GatewayConfig) -> GatewayAuthError:
    which = "its token is wrong" if config.token else "it needs a token"
    return GatewayAuthError(
        f"The kernel gateway at {config.host} refused the connection: {which}. "
        "Set KERNEL_GATEWAY_TOKEN to the gateway's token (KG_AUTH_TOKEN / EG_AUTH_TOKEN)."
    )


def _unreachable(config: GatewayConfig, error: Exception) -> GatewayUnavailable:
    return GatewayUnavailable(
        f"The kernel gateway at {config.host} cannot be reached ({type(error).__name__}); "
        "code will run again as soon as it is back."
    )


def _cell(template: str, **values: object) -> str:
    """A private cell: `template` filled in, run in a namespace of its own (exec with fresh globals),
    so the user's variables neither see nor shadow its names."""
    return f"exec({template.format(**values)!r}, {{}})"


# Templates of private cells; values are filled in as Python literals (json.dumps for strings).
_SETUP = (
    "import os\nos.makedirs({dir}, mode=0o700, exist_ok=True)\nos.chdir({dir})\n"
    # Plots inline, as in a local kernel (read when matplotlib is imported; a gateway passes no such variable).
    f"os.environ['MPLBACKEND'] = {INLINE_BACKEND!r}\n"
)

_REMOVE_DIR = "import shutil\nshutil.rmtree({dir}, ignore_errors=True)\n"

_WRITE_CHUNK = """import base64, os
d = os.open({dir}, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
try:
    flags = os.O_WRONLY | os.O_NOFOLLOW | ((os.O_CREAT | os.O_EXCL) if {first} else os.O_APPEND)
    try:
        fd = os.open({part}, flags, 0o644, dir_fd=d)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode({data}))
        if {last}:
            os.rename({part}, {name}, src_dir_fd=d, dst_dir_fd=d)
    except BaseException:
        try:
            os.unlink({part}, dir_fd=d)
        except OSError:
            pass
        raise
finally:
    os.close(d)
"""

_LIST = f"""import json, os, stat
root, found, scanned = {{dir}}, [], 0
for folder, dirs, names in os.walk(root):
    scanned += len(dirs) + len(names)
    if scanned > {MAX_SCANNED_ENTRIES}:
        break
    dirs[:] = sorted(n for n in dirs if not (n.startswith(".") or n == "__pycache__"))
    for n in sorted(names):
        if n.startswith(".") or n == "__pycache__":
            continue
        path = os.path.join(folder, n)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            found.append([os.path.relpath(path, root), st.st_mtime_ns, st.st_size])
    if len(found) >= {MAX_LISTED_FILES}:
        found = found[:{MAX_LISTED_FILES}]
        break
print(json.dumps(found))
"""

_READ_CHUNK = """import base64, os, stat
parts = {parts}
fd = os.open({dir}, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
try:
    for folder in parts[:-1]:
        inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = inner
    file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
finally:
    os.close(fd)
try:
    st = os.fstat(file_fd)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(parts[-1] + " is not a regular file.")
    if st.st_size > {max_bytes}:
        raise ValueError(parts[-1] + " is larger than {max_bytes:,} bytes.")
    data = os.pread(file_fd, {chunk}, {offset})
finally:
    os.close(file_fd)
print(base64.b64encode(data).decode())
"""
