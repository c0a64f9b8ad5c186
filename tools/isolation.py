"""Run a tool in a worker process, so that a timeout really stops it.

A thread cannot be killed: a tool stuck in C code (`10 ** 10 ** 8`) holds the GIL and
freezes the whole app, and an abandoned one runs on in the background. So each call
goes to a warm worker process (a plain `python` that has imported `tools`); a call
that overruns its timeout has its worker SIGKILLed, with the worker's process group,
and a fresh one is started in the background to take its place.

bench/bench_tools.py chose this design (median per call, 2 busy cores): a warm worker
0.42 ms against 0.25 ms for a thread, while a fresh subprocess per call costs ~340 ms
(interpreter start plus imports) and a forkserver child per call ~430 ms. A runaway
is stopped at its timeout (+10 ms), and the next call finds a spare worker starting.

A worker finds the function by its module and qualified name: it imports the module,
or, for a TOOLS_DIR file, runs the very source the app loaded. `locate` says whether a
function can be found that way; a function defined inside another one cannot.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.util
import io
import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType
from typing import Any

from tools import loader
from tools.result import render_value
from tools.workspace import tool_workdir

# Generous: on a busy machine a new interpreter importing `tools` can take seconds.
TOOL_WORKER_START_TIMEOUT_S = 60.0
# Warm workers kept between calls; more are started while calls overlap.
MAX_IDLE_WORKERS = 2

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_BOOT = "import json, sys; sys.path[:] = json.loads(sys.argv[2]); from tools.isolation import serve; serve(int(sys.argv[1]))"
_READY = b"ready"

_deadline: ContextVar[float | None] = ContextVar("tool_deadline", default=None)


def time_left() -> float | None:
    """Seconds before the running tool call times out (None: no limit), for tools that wait on something."""
    deadline = _deadline.get()
    return None if deadline is None else max(0.0, deadline - time.monotonic())


@contextlib.contextmanager
def call_deadline(timeout: float | None) -> Iterator[None]:
    """`time_left()` counts down from `timeout` inside this block."""
    token = _deadline.set(None if timeout is None else time.monotonic() + timeout)
    try:
        yield
    finally:
        _deadline.reset(token)


# --- where a worker finds a function ----------------------------------------------------------


@dataclass(frozen=True)
class FunctionRef:
    """How a worker process finds a tool's function."""

    module: str
    qualname: str
    file: str | None = None
    source: bytes | None = None  # a TOOLS_DIR file: the text the app ran, so both run the same version


def locate(function: Any) -> FunctionRef | None:
    """A reference a worker can follow to this very function, or None when there is none.

    None for functions defined inside another function (closures: their cells hold this
    process's live objects), in `__main__`, or hidden behind another decorator: the name
    that would be imported is not this function.
    """
    module_name = getattr(function, "__module__", None)
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(module_name, str) or not isinstance(qualname, str):
        return None
    if "<locals>" in qualname or module_name == "__main__":
        return None
    module = sys.modules.get(module_name)
    if module is None or _attribute(module, qualname) is not function:
        return None
    file = getattr(module, "__file__", None)
    if (source := loader.loaded_source(module_name)) is not None and file:
        return FunctionRef(module_name, qualname, file, source)
    spec = getattr(module, "__spec__", None)
    if spec is None and not file:
        return None
    return FunctionRef(module_name, qualname, file)


def _attribute(module: ModuleType, qualname: str) -> Any:
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


# --- the worker process -----------------------------------------------------------------------


@dataclass
class Reply:
    """What a worker sends back for one call."""

    ok: bool
    value: Any = None
    error_type: str = ""
    error_message: str = ""
    stdout: str = ""


@dataclass(frozen=True)
class _Job:
    ref: FunctionRef
    arguments: dict[str, Any]
    workdir: str
    timeout: float | None
    env: dict[str, str] | None  # None: unchanged since the last job
    sys_path: list[str] | None


def serve(fd: int) -> None:
    """The worker's loop: run one job at a time until the app closes the connection."""
    connection = Connection(fd)
    connection.send_bytes(_READY)
    while True:
        try:
            data = connection.recv_bytes()
        except (EOFError, OSError):
            return
        connection.send_bytes(_answer(data))


def _answer(data: bytes) -> bytes:
    stdout = io.StringIO()
    try:
        job: _Job = pickle.loads(data)
        if job.env is not None:  # the app's environment now, as a thread would see it
            os.environ.clear()
            os.environ.update(job.env)
        if job.sys_path is not None:
            sys.path[:] = job.sys_path
        function = _find(job.ref)
        with contextlib.redirect_stdout(stdout), tool_workdir(Path(job.workdir)), call_deadline(job.timeout):
            value = function(**job.arguments)
    except BaseException as exc:  # SystemExit too: the worker stays up for the next call
        return pickle.dumps(
            Reply(False, error_type=type(exc).__name__, error_message=_text(exc), stdout=stdout.getvalue())
        )
    try:
        return pickle.dumps(Reply(True, value, stdout=stdout.getvalue()))
    except Exception:  # not picklable (an instance of a local class, a generator): send what the model would read
        return pickle.dumps(Reply(True, render_value(value), stdout=stdout.getvalue()))


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return ""


_loaded_sources: dict[str, bytes] = {}


def _find(ref: FunctionRef) -> Any:
    if ref.source is not None and ref.file is not None:
        if _loaded_sources.get(ref.module) != ref.source:  # first call, or the app reloaded the file
            loader.exec_source(ref.module, Path(ref.file), ref.source)
            _loaded_sources[ref.module] = ref.source
        module = sys.modules[ref.module]
    else:
        try:
            module = importlib.import_module(ref.module)
        except ImportError:
            if ref.file is None:
                raise
            module = _import_file(ref.module, ref.file)  # imported by path in the app (pytest's importlib mode)
    function = _attribute(module, ref.qualname)
    if function is None:
        raise LookupError(f"{ref.module} has no {ref.qualname} in the worker process")
    return function


def _import_file(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {file}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- the app's side ---------------------------------------------------------------------------


class WorkerCrashed(Exception):
    """The worker process ended during a call; the message says how."""


class WorkerUnavailable(Exception):
    """No worker process could be started; the message says why."""


class UnreadableReply(Exception):
    """The worker's reply could not be unpickled here (say, an instance of a class this process lacks)."""


class Worker:
    """One worker process and the connection to it. Used by one call at a time."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), json.dumps([*sys.path, _PACKAGE_ROOT])],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: a kill takes what the tool started too
            )
        self.connection = Connection(ours.detach())
        self._ready = False
        self._env: dict[str, str] | None = None
        self._sys_path: list[str] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def ensure_ready(self, timeout: float = TOOL_WORKER_START_TIMEOUT_S) -> None:
        """Wait until the worker has imported `tools` (not counted in a call's timeout)."""
        if self._ready:
            return
        if not self.connection.poll(timeout):
            raise WorkerUnavailable(f"no worker process started within {timeout:g} s")
        try:
            greeting = self.connection.recv_bytes()
        except (EOFError, OSError):
            raise WorkerUnavailable(f"the worker process {self.how_it_ended()} while starting") from None
        if greeting != _READY:
            raise WorkerUnavailable("the worker process sent an unexpected greeting")
        self._ready = True

    def call(self, ref: FunctionRef, arguments: dict[str, Any], workdir: str, timeout: float | None) -> bytes | None:
        """The pickled Reply, or None when `timeout` passed first. Raises WorkerCrashed."""
        env, path = dict(os.environ), list(sys.path)
        job = _Job(
            ref,
            arguments,
            workdir,
            timeout,
            env=None if env == self._env else env,
            sys_path=None if path == self._sys_path else path,
        )
        try:
            self.connection.send_bytes(pickle.dumps(job))
            self._env, self._sys_path = env, path
            if not self.connection.poll(None if timeout is None else max(0.0, timeout)):
                return None
            return self.connection.recv_bytes()
        except (EOFError, OSError):
            raise WorkerCrashed(self.how_it_ended()) from None

    def how_it_ended(self) -> str:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "stopped answering"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def kill(self) -> None:
        """SIGKILL the worker's whole process group; nothing it runs can refuse that."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()  # in case it left its group
        self.process.wait()
        self.connection.close()


class WorkerPool:
    """Warm workers, handed out one per call; a worker whose call timed out or crashed is killed and replaced."""

    def __init__(self, max_idle: int = MAX_IDLE_WORKERS) -> None:
        self.max_idle = max_idle
        self._idle: list[Worker] = []
        self._live: set[Worker] = set()
        self._lock = threading.Lock()

    def run(
        self, ref: FunctionRef, arguments: dict[str, Any], workdir: str, timeout: float | None
    ) -> tuple[Reply | None, float]:
        """The worker's reply (None: timed out, its worker killed) and how long the call took."""
        worker = self._acquire()
        try:
            worker.ensure_ready()
            started = time.perf_counter()
            data = worker.call(ref, arguments, workdir, timeout)
            duration = time.perf_counter() - started
        except BaseException:
            self._discard(worker)
            raise
        if data is None:
            self._discard(worker)
            self._start_spare()  # the next call finds a warm worker instead of waiting for one to start
            return None, duration
        self._release(worker)
        try:
            return pickle.loads(data), duration
        except Exception as exc:
            raise UnreadableReply(f"{type(exc).__name__}: {exc}") from None

    def live_pids(self) -> list[int]:
        with self._lock:
            return sorted(worker.pid for worker in self._live)

    def shutdown(self) -> None:
        """Kill every worker, busy or idle (at exit; a later call starts fresh ones)."""
        with self._lock:
            workers, self._idle = list(self._live), []
            self._live.clear()
        for worker in workers:
            worker.kill()

    def _acquire(self) -> Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.process.poll() is None:
                    return worker
                self._live.discard(worker)
                worker.kill()
        return self._new_worker()

    def _new_worker(self) -> Worker:
        try:
            worker = Worker()
        except OSError as exc:
            raise WorkerUnavailable(f"no worker process could be started ({exc})") from None
        with self._lock:
            self._live.add(worker)
        return worker

    def _start_spare(self) -> None:
        with self._lock:
            if len(self._idle) >= self.max_idle:
                return
        with contextlib.suppress(WorkerUnavailable):
            worker = self._new_worker()
            self._release(worker)

    def _release(self, worker: Worker) -> None:
        with self._lock:
            if worker in self._live and len(self._idle) < self.max_idle:
                self._idle.append(worker)
                return
        self._discard(worker)

    def _discard(self, worker: Worker) -> None:
        with self._lock:
            self._live.discard(worker)
        worker.kill()


pool = WorkerPool()
atexit.register(pool.shutdown)
