"""The kernel as an operating-system process: how it is launched, limited and killed."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psutil
from jupyter_client.kernelspec import KernelSpec

# Inline figures without a start-up cell: matplotlib reads this when pyplot is first imported.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# Variables the model's code has no business reading (API keys of the app, cloud tokens).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH_SOCK)$", re.IGNORECASE)


KERNEL_ARGV = [
    sys.executable,
    "-m",
    "ipykernel_launcher",
    "-f",
    "{connection_file}",
    # No history database: kernels are throwaway, and many would contend for one sqlite file.
    "--HistoryManager.enabled=False",
]
# What every kernel gets, sandboxed or not.
KERNEL_ENV = {
    "MPLBACKEND": INLINE_BACKEND,
    # Each glibc malloc arena reserves 64 MB of address space per thread; under RLIMIT_AS
    # that reservation, not real use, would be what runs out first.
    "MALLOC_ARENA_MAX": "2",
    # debugpy warns on every start that frozen modules may break breakpoints; we never debug.
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
}
# Inside a sandbox only /tmp is writable besides the working directory, whose listing these would clutter.
SANDBOX_KERNEL_ENV = {
    **KERNEL_ENV,
    "IPYTHONDIR": "/tmp/.ipython",
    "MPLCONFIGDIR": "/tmp/.matplotlib",
    # The app's pid means nothing in the sandbox's PID namespace; 1 tells ipykernel not to watch
    # its parent (bwrap's --die-with-parent does that) and not to print its terminal banner.
    "JPY_PARENT_PID": "1",
}


# bwrap's --die-with-parent kills a sandbox when the *thread* that started it ends (Linux's
# parent-death signal follows threads, not processes), and kernels are started from short-lived
# threads (pre-warm, a page's worker). So every sandboxed kernel is started from this one
# thread, which lives as long as the app.
_launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel-launcher")


def in_launcher_thread(start: Callable[[], None]) -> None:
    """Run `start` (which spawns the kernel process) on the app-long launcher thread; re-raises its error."""
    _launcher.submit(start).result()


def kernel_spec(argv: list[str] | None = None, interrupt_mode: str = "signal") -> KernelSpec:
    """An in-code kernel spec, independent of installed kernelspecs: this interpreter, or `argv` that wraps it.

    A sandboxed kernel is interrupted by message: signals sent to bwrap do not reach inside.
    """
    return KernelSpec(
        argv=argv or KERNEL_ARGV,
        display_name="GLM Workbench Python",
        language="python",
        interrupt_mode=interrupt_mode,
    )


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An unsandboxed kernel's environment: the app's, minus secrets, plus inline plotting."""
    env = {name: value for name, value in (base or os.environ).items() if not _SECRET_NAME.search(name)}
    return {**KERNEL_ENV, **env, "MPLBACKEND": INLINE_BACKEND}  # the app's own MPLBACKEND would stop inline figures


def apply_memory_limit(pid: int, limit_bytes: int | None) -> None:
    """Cap the address space of the running kernel process (children inherit the cap).

    prlimit works from outside the process, so the app never needs a fork-time hook
    (`preexec_fn` is unsafe in a threaded app such as Streamlit). The hard limit is
    lowered too, so code in the kernel cannot lift it again.
    """
    if limit_bytes is None:
        return
    if not hasattr(resource, "prlimit"):  # not Linux: documented as unenforced
        return
    resource.prlimit(pid, resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def has_exited(process: subprocess.Popen) -> bool:
    """Whether the kernel has ended, checked without reaping it.

    An unreaped process keeps its pid, and so its process-group id, from being reused:
    signalling the group stays safe until `kill_process_tree` reaps it.
    """
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped behind our back
        return True


def interrupt_process_group(process: subprocess.Popen) -> None:
    """SIGINT the kernel's group, as Jupyter does: KeyboardInterrupt in the cell, and its subprocesses stop."""
    if not has_exited(process):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGINT)


def kill_process_tree(process: subprocess.Popen) -> None:
    """SIGKILL the kernel, its process group and its descendants, then reap the kernel.

    The kernel leads its own session (jupyter_client starts it with start_new_session), so
    the group covers ordinary subprocesses, even after the kernel itself died; walking
    descendants also catches ones that started a session of their own. Nothing is
    signalled once the kernel is reaped, when its pid may belong to someone else.
    """
    if process.returncode is not None:
        return
    descendants: list[psutil.Process] = []
    with contextlib.suppress(psutil.Error):
        descendants = psutil.Process(process.pid).children(recursive=True)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    process.wait()  # reap, so no zombie remains (orphaned descendants are init's to reap)


def describe_exit(returncode: int | None, signal_as_status: bool = False) -> str:
    """How the kernel ended, in words: "killed by SIGSEGV" or "exit code 1".

    bwrap reports a program killed by signal N as exit status 128 + N (`signal_as_status`).
    """
    if returncode is None:
        return "still running"
    if signal_as_status and returncode > 128:
        returncode = 128 - returncode
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
