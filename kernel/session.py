"""KernelSession: one managed IPython kernel with its own working directory."""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import zmq
from jupyter_client import BlockingKernelClient, KernelManager
from jupyter_client.kernelspec import KernelSpec

from kernel import files, registry
from kernel.collector import OutputCollector, error_output
from kernel.limits import (
    ALIVE_CHECK_INTERVAL_S,
    CELL_TIMEOUT_S,
    DEFAULT_MEMORY_LIMIT,
    INTERRUPT_GRACE_S,
    KERNEL_START_TIMEOUT_S,
    MAX_RESULT_TEXT_CHARS,
    MAX_SESSION_UPLOAD_BYTES,
    MAX_UPLOAD_BYTES,
)
from kernel.process import (
    KERNEL_ARGV,
    SANDBOX_KERNEL_ENV,
    apply_memory_limit,
    describe_exit,
    has_exited,
    in_launcher_thread,
    interrupt_process_group,
    kernel_env,
    kernel_spec,
    kill_process_tree,
)
from kernel.result import ExecutionResult, Output, Status
from sandbox import MOUNT_POINT, Confinement, Limits, SandboxChoice, bwrap_command, claim_workdir, configured_sandbox

WaitOutcome = Literal["idle", "timeout", "died"]


class KernelUnavailable(RuntimeError):
    """No kernel can run: the sandbox policy refuses, or the kernel failed to start. The message says why."""


class _InCodeKernelManager(KernelManager):
    """A KernelManager whose kernel spec comes from code, never from installed kernelspecs."""

    spec: KernelSpec | None = None

    @property
    def kernel_spec(self) -> KernelSpec:
        return self.spec or kernel_spec()


class KernelSession:
    """A Python kernel for one user: run code, collect every output, survive bad code.

    The kernel starts lazily (or on `start()`), talks over unix sockets in a private
    directory, runs in `workdir` under an address-space limit, and is restarted when it
    dies or ignores a timeout. One execution runs at a time; `interrupt()`, `restart()`
    and `shutdown()` may be called from other threads while one runs.

    `sandbox` (default: what KERNEL_SANDBOX and APP_PASSWORD say, see sandbox/policy.py)
    decides whether the kernel runs in a bubblewrap sandbox, where `workdir` is /mnt/data
    and nothing else of the host is visible, unconfined, or not at all.

    When KERNEL_GATEWAY_URL is set, `KernelSession(...)` gives a `GatewayKernelSession`
    (kernel/gateway.py) instead: the same interface, with the kernel on a Jupyter Kernel
    Gateway or Enterprise Gateway.
    """

    remote = False  # whether the kernel runs elsewhere (a gateway), its files too
    problem: str | None = None  # why the kernel cannot start now, in one sentence (set by gateway sessions)

    def __new__(cls, *args: Any, **kwargs: Any) -> KernelSession:
        if cls is KernelSession:
            from kernel.gateway import GatewayKernelSession, configured_gateway  # the gateway imports this module

            if configured_gateway() is not None:
                return super().__new__(GatewayKernelSession)
        return super().__new__(cls)

    def __init__(
        self,
        workdir: Path | str | None = None,
        memory_limit_bytes: int | None = DEFAULT_MEMORY_LIMIT,
        max_output_chars: int = MAX_RESULT_TEXT_CHARS,
        sandbox: SandboxChoice | None = None,
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="glm-kernel-work-")).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sandbox = sandbox or configured_sandbox()
        # As root, the sandbox runs as a uid of its own, which owns the working directory.
        self.sandbox_uid = claim_workdir(self.workdir) if self.sandbox.sandboxed else None
        self.memory_limit_bytes = memory_limit_bytes
        self.upload_budget_bytes = MAX_SESSION_UPLOAD_BYTES  # what save_upload may still write, in all
        self.max_output_chars = max_output_chars
        self.last_used = time.monotonic()  # for shutdown_idle(); monotonic, so clock changes don't matter
        self._lock = threading.Lock()  # one execution (or start/restart/stop) at a time
        self._signal_lock = threading.Lock()  # signals and reaping from several threads, one at a time
        self._busy = False
        self._closed = False
        self._restart_requested = False
        self._generation = 0  # bumped on every launch, so a restart is never done twice
        self._ran_generation = 0  # the launch that last ran code: `holds_state`
        self._manager: KernelManager | None = None
        self._client: BlockingKernelClient | None = None
        self._runtime_dir: Path | None = None  # connection file and sockets
        registry.register(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the kernel now rather than on the first execute (pre-warm). Idempotent."""
        with self._lock:
            self._ensure_started()

    def restart(self) -> None:
        """Replace the kernel with a fresh one (same working directory; variables are lost).

        Callable while an execution runs: it is stopped and reports that the kernel restarted.
        """
        if self._closed:
            raise RuntimeError("This KernelSession was shut down; create a new one.")
        generation = self._generation
        self._restart_requested = True
        self._kill()  # wakes a waiting execute, which restarts the kernel itself
        with self._lock:
            self._restart_requested = False
            if self._generation == generation:
                self._relaunch()

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in the running code. Safe to call from any thread."""
        manager, process = self._manager, self._process()
        if manager is None or process is None:
            return
        with self._signal_lock:
            if not self.sandbox.sandboxed:
                interrupt_process_group(process)
            elif not has_exited(process):
                with contextlib.suppress(Exception):  # a dying kernel's control socket may be gone
                    manager.interrupt_kernel()  # an interrupt_request message; the kernel signals itself

    def shutdown(self) -> None:
        """Kill the kernel and everything it started; remove a working directory we created.

        Final and idempotent: the session cannot be used afterwards.
        """
        if self._closed:
            return
        self._closed = True
        self._kill()  # do not wait for a running execution to finish first
        with self._lock:
            self._stop()
            if self._owns_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
        registry.unregister(self)

    def is_alive(self) -> bool:
        """Whether the kernel process is running (False before start and after shutdown)."""
        process = self._process()
        return process is not None and not has_exited(process)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def busy(self) -> bool:
        """Whether an execution is running."""
        return self._busy

    @property
    def holds_state(self) -> bool:
        """Whether the running kernel has run code (False after a start or restart: no variables yet)."""
        return self._ran_generation == self._generation and self._generation > 0

    @property
    def cwd(self) -> str:
        """The working directory as the code sees it: /mnt/data in a sandbox, the host path otherwise."""
        return MOUNT_POINT if self.sandbox.sandboxed else str(self.workdir)

    @property
    def pid(self) -> int | None:
        """The kernel's process on the host (in a sandbox: bwrap's, which takes the kernel with it)."""
        process = self._process()
        return process.pid if process is not None else None

    @property
    def connection_info(self) -> dict[str, Any]:
        """How the client reaches the kernel (transport, socket paths; the key is left out)."""
        if self._manager is None:
            return {}
        info = dict(self._manager.get_connection_info())
        info.pop("key", None)
        return info

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"pid={self.pid}" if self.is_alive() else "not running"
        return f"KernelSession(workdir={str(self.workdir)!r}, {state})"

    def __enter__(self) -> KernelSession:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    # -- execution ---------------------------------------------------------------------------

    def execute(self, code: str, timeout: float | None = CELL_TIMEOUT_S) -> ExecutionResult:
        """Run `code` and return all of its outputs in order; never raises for bad code.

        On timeout the code is interrupted (variables kept), or the kernel restarted if it
        does not respond. If the kernel dies it is restarted. `timeout=None` waits forever.
        """
        with self._lock:
            self._busy = True
            try:
                return self._execute(code, math.inf if timeout is None else timeout)
            except KernelUnavailable as error:
                note = error_output("KernelUnavailable", str(error))
                return ExecutionResult(outputs=[note], status="error", duration_s=0.0, execution_count=None)
            finally:
                self._busy = False
                self.last_used = time.monotonic()

    def _execute(self, code: str, timeout: float) -> ExecutionResult:
        collector = OutputCollector(max_text_chars=self.max_output_chars)
        revived = self._ensure_started()
        if revived is not None:
            collector.add_note(revived)
        self._ran_generation = self._generation
        started = time.monotonic()
        msg_id = self._send_execute(code)
        outcome = self._wait_for_idle(msg_id, collector, started + timeout)

        status: Status | None = None
        if outcome == "timeout":
            status = "timeout"
            collector.add_note(self._stop_overrun(msg_id, collector, timeout))
        elif outcome == "died":
            status = "died"
            collector.add_note(error_output("KernelDied", self._death_message() + self._recover()))

        outputs = collector.finish()
        return ExecutionResult(
            outputs=outputs,
            status=status or _status_from_outputs(outputs),
            duration_s=time.monotonic() - started,
            execution_count=collector.execution_count,
        )

    def _wait_for_idle(self, msg_id: str, collector: OutputCollector, deadline: float) -> WaitOutcome:
        """Collect this request's IOPub messages until the kernel reports idle, dies or time runs out."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            try:
                msg = self._next_iopub(min(remaining, ALIVE_CHECK_INTERVAL_S))
            except queue.Empty:
                if not self.is_alive():
                    return "died"
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue  # left over from an earlier, interrupted request
            if msg["msg_type"] == "status":
                if msg["content"]["execution_state"] == "idle":
                    return "idle"
            else:
                collector.add(msg)

    def _stop_overrun(self, msg_id: str, collector: OutputCollector, timeout: float) -> Output:
        """Interrupt code that ran out of time; restart a kernel that does not come back. Returns the note."""
        self.interrupt()
        outcome = self._wait_for_idle(msg_id, collector, time.monotonic() + INTERRUPT_GRACE_S)
        message = f"Execution timed out after {timeout:g} s"
        if outcome == "idle":
            return error_output("TimeoutError", f"{message} and was interrupted.")
        reason = "did not respond to the interrupt" if outcome == "timeout" else "died"
        return error_output("TimeoutError", f"{message}; the kernel {reason}{self._recover()}")

    def _send_execute(self, code: str) -> str:
        """Send an execute request (stdin refused, later requests not skipped after an error); its msg_id."""
        assert self._client is not None
        self._drain_shell_replies()
        return self._client.execute(code, allow_stdin=False, stop_on_error=False)

    def _next_iopub(self, timeout: float) -> dict[str, Any]:
        """The next IOPub message; queue.Empty when none comes within `timeout`."""
        assert self._client is not None
        return self._client.get_iopub_msg(timeout=timeout)

    def _drain_shell_replies(self) -> None:
        """Discard execute replies of earlier requests: outputs come from IOPub, replies only pile up.

        Raw frames are dropped undecoded; decoding a message costs more than the rest of our overhead.
        """
        assert self._client is not None
        socket = self._client.shell_channel.socket
        with contextlib.suppress(zmq.Again):
            while True:
                socket.recv_multipart(zmq.NOBLOCK)

    def _death_message(self) -> str:
        if self._restart_requested:
            return "The kernel was restarted while the code ran"
        self._kill()  # its subprocesses too; and reaping gives the exit status
        process = self._process()
        how = describe_exit(process.returncode, self.sandbox.sandboxed) if process is not None else "gone"
        return f"The kernel died unexpectedly ({how})"

    def _recover(self) -> str:
        """Restart after a death or an unanswered interrupt; the end of the sentence to report."""
        if self._closed:
            return "; the session has been shut down."
        self._relaunch()
        return " and was restarted; variables and imports were lost."

    # -- kernel process ----------------------------------------------------------------------

    def _ensure_started(self) -> Output | None:
        """Launch the kernel if needed; relaunch one that died while idle and return a note saying so."""
        if self._closed:
            raise RuntimeError("This KernelSession was shut down; create a new one.")
        if self.sandbox.mode == "refused":
            raise KernelUnavailable(self.sandbox.reason)
        if self._client is None:
            self._launch()
            return None
        if self.is_alive():
            return None
        return self._revive()

    def _revive(self) -> Output:
        """Relaunch a kernel that died while idle; the note that says so."""
        how = self._death_message()
        self._relaunch()
        text = f"[{how} since the last execution and was restarted; earlier variables and imports were lost.]\n"
        return Output(kind="stream", name="stderr", text=text)

    def _launch(self) -> None:
        # A private 0700 directory: nobody else can connect to the kernel's sockets.
        runtime_dir = Path(tempfile.mkdtemp(prefix="glm-kernel-"))
        manager = _InCodeKernelManager(transport="ipc", connection_file=str(runtime_dir / "kernel.json"))
        self._manager, self._runtime_dir = manager, runtime_dir
        self._generation += 1
        try:
            if self.sandbox.sandboxed:
                self._start_sandboxed(manager, runtime_dir)
            else:
                manager.start_kernel(cwd=str(self.workdir), env=kernel_env())
                process = self._process()
                assert process is not None
                apply_memory_limit(process.pid, self.memory_limit_bytes)
            client = manager.client()
            client.start_channels(stdin=False, hb=False, control=False)
            self._client = client
            client.wait_for_ready(timeout=KERNEL_START_TIMEOUT_S)
        except Exception as error:
            self._stop()
            raise KernelUnavailable(f"The Python kernel failed to start: {error}") from error

    def _start_sandboxed(self, manager: _InCodeKernelManager, runtime_dir: Path) -> None:
        """Start the kernel in bwrap: its sockets' directory is bound in, limits are set inside."""
        limits = Limits(memory_bytes=self.memory_limit_bytes)
        confinement = Confinement(self.workdir, limits, self.sandbox_uid, (runtime_dir,), SANDBOX_KERNEL_ENV)
        manager.spec = kernel_spec(bwrap_command(confinement, KERNEL_ARGV), interrupt_mode="message")
        manager.write_connection_file()
        if self.sandbox_uid is not None:  # the kernel, as its own uid, binds the sockets and reads the key
            for path in (runtime_dir, Path(manager.connection_file)):
                os.chown(path, self.sandbox_uid, self.sandbox_uid)
        in_launcher_thread(lambda: manager.start_kernel(cwd=str(self.workdir)))

    def _relaunch(self) -> None:
        self._stop()
        self._launch()

    def _stop(self) -> None:
        """Kill the kernel and release its sockets and files (caller holds the lock)."""
        client, manager, runtime_dir = self._client, self._manager, self._runtime_dir
        self._client = self._manager = self._runtime_dir = None
        if client is not None:
            client.stop_channels()
        if manager is not None:
            process = _provisioned_process(manager)
            if process is not None:
                with self._signal_lock:
                    kill_process_tree(process)
            manager.cleanup_resources()
        if runtime_dir is not None:
            shutil.rmtree(runtime_dir, ignore_errors=True)

    def _kill(self) -> None:
        """Kill the kernel without the lock, so a waiting execution notices at once."""
        process = self._process()
        if process is not None:
            with self._signal_lock:
                kill_process_tree(process)

    def _process(self) -> subprocess.Popen | None:
        manager = self._manager
        return _provisioned_process(manager) if manager is not None else None

    # -- files -------------------------------------------------------------------------------

    def save_upload(self, name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> Path:
        """Store an uploaded file in the working directory under a sanitised name.

        Raises ValueError if `data` is larger than `max_bytes` or than what is left of the session's budget.
        """
        if len(data) > self.upload_budget_bytes:
            raise ValueError(
                f"File {name!r} does not fit: this session may upload {self.upload_budget_bytes:,} more bytes "
                f"({MAX_SESSION_UPLOAD_BYTES / 1e6:.0f} MB in all)."
            )
        path = files.save_upload(self.workdir, name, data, max_bytes)
        self.upload_budget_bytes -= len(data)
        if self.sandbox_uid is not None:  # so code in the sandbox may change or replace it
            os.chown(path, self.sandbox_uid, self.sandbox_uid)
        return path

    def list_files(self) -> list[Path]:
        """Files in the working directory (for download buttons)."""
        return files.list_files(self.workdir)

    def file_size(self, path: Path) -> int:
        """Size of a listed file, not following a link; OSError if it is gone."""
        return path.lstat().st_size

    def read_file(self, path: Path, max_bytes: int) -> bytes:
        """A file of the working directory (for a download), never through a link; ValueError/OSError if not."""
        return files.read_file(self.workdir, path, max_bytes)

    def files_snapshot(self) -> files.FileSnapshot:
        """The working directory's state, to pass to `new_files_since` after running code."""
        return files.snapshot(self.workdir)

    def new_files_since(self, snapshot: files.FileSnapshot) -> list[Path]:
        """Files created or modified since `snapshot` was taken."""
        return files.new_files_since(self.workdir, snapshot)


def _provisioned_process(manager: KernelManager) -> subprocess.Popen | None:
    # Kernels here are always local, so the provisioner is a LocalProvisioner holding the Popen.
    return getattr(manager.provisioner, "process", None)


def _status_from_outputs(outputs: list[Output]) -> Status:
    errors = [output for output in outputs if output.kind == "error"]
    if not errors:
        return "ok"
    return "interrupted" if errors[-1].ename == "KeyboardInterrupt" else "error"
