"""The kernel as an operating-system process: how it is launched, limited and killed."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys

import psutil
from jupyter_client.kernelspec import KernelSpec

# Inline figures without a start-up cell: matplotlib reads this when pyplot is first imported.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
# Variables the model's code has no business reading (API keys of the app, cloud tokens).
_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH_SOCK)$", re.IGNORECASE)


def kernel_spec() -> KernelSpec:
    """An in-code kernel spec for this interpreter, independent of installed kernelspecs."""
    return KernelSpec(
        argv=[
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            # No history database: kernels are throwaway, and many would contend for one sqlite file.
            "--HistoryManager.enabled=False",
        ],
        display_name="GLM Workbench Python",
        language="python",
        interrupt_mode="signal",
    )


def kernel_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's environment: the app's, minus secrets, plus inline plotting."""
    env = {name: value for name, value in (base or os.environ).items() if not _SECRET_NAME.search(name)}
    env["MPLBACKEND"] = INLINE_BACKEND
    # Each glibc malloc arena reserves 64 MB of address space per thread; under RLIMIT_AS
    # that reservation, not real use, would be what runs out first.
    env.setdefault("MALLOC_ARENA_MAX", "2")
    # debugpy warns on every start that frozen modules may break breakpoints; we never debug.
    env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
    return env


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


def describe_exit(returncode: int | None) -> str:
    """How the kernel ended, in words: "killed by SIGSEGV" or "exit code 1"."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
