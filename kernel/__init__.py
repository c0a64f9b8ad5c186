"""A managed Jupyter kernel for the Code Interpreter mode.

    from kernel import KernelSession
    with KernelSession() as session:
        result = session.execute("print(1 + 1)", timeout=10)
        result.status, result.text, result.images, result.to_observation()

Threat model
------------
The code comes from a language model, which may be wrong, careless or steered by a
prompt injection (a pasted text, an uploaded file, a tool result): it is hostile until
proven otherwise. By default (KERNEL_SANDBOX=auto, bwrap present) each kernel runs in a
bubblewrap sandbox (sandbox/), which gives it:

- a filesystem allow-list: the system's /usr and this Python read-only, the session's
  working directory read-write at /mnt/data, a private 512 MiB /tmp; not DATA_DIR
  (conversations, other workspaces), not $HOME, /root, /run, the checkout or any socket;
- no network (its own network namespace: not even the host's loopback), no DNS;
- its own PID, IPC and UTS namespaces (host processes are invisible, the app cannot be
  signalled), a new session (no TIOCSTI), death with the app;
- an unprivileged uid (a fresh one per working directory when the app is root, nobody in
  a user namespace otherwise), no capabilities, no new privileges;
- limits set inside before the kernel starts: address space (KERNEL_MEMORY_MB), 256
  processes and threads, 1 GiB per file, an hour of CPU per process, no core files;
- a fixed minimal environment: none of the app's variables.

Kept from before, sandboxed or not: a time limit per cell (interrupt, then restart),
output caps, `input()` refused, crashes detected and restarted, no leftover processes,
upload names reduced to a basename, unix-socket channels in a private 0700 directory.

Not covered: kernel exploits (the sandbox shares the host's Linux kernel), CPU
starvation (each sandbox is its own session, so the scheduler's autogroups share the
CPU fairly between it and the app, but a sandbox can still use its share), total memory
across a sandbox's processes (RLIMIT_AS is per process: 256 processes may each map up to
the limit; a cgroup would bound the sum), disk space in the working directory. As root,
code in the sandbox could create user namespaces of its own (bwrap's --disable-userns
needs the user namespace the unprivileged mode uses). KERNEL_SANDBOX=none, or `auto`
where bwrap cannot start, runs the kernel unconfined as the app's user: the page says so,
and a shared app (APP_PASSWORD set) refuses to run code then. RLIMIT_AS must be disabled
(`memory_limit_bytes=None`) for CUDA.

With KERNEL_GATEWAY_URL set, `KernelSession()` gives a GatewayKernelSession (gateway.py):
the kernel runs on a Jupyter Kernel Gateway or Enterprise Gateway, and its isolation is
the gateway's (on Kubernetes, a pod per kernel; see the README), not the sandbox above.
"""

from kernel.gateway import GatewayKernelSession
from kernel.limits import (
    CELL_TIMEOUT_S,
    DEFAULT_MEMORY_LIMIT,
    MAX_OBSERVATION_CHARS,
    MAX_RESULT_TEXT_CHARS,
    MAX_UPLOAD_BYTES,
)
from kernel.registry import live_sessions, shutdown_all, shutdown_idle
from kernel.result import ExecutionResult, Output
from kernel.session import KernelSession, KernelUnavailable

__all__ = [
    "CELL_TIMEOUT_S",
    "DEFAULT_MEMORY_LIMIT",
    "MAX_OBSERVATION_CHARS",
    "MAX_RESULT_TEXT_CHARS",
    "MAX_UPLOAD_BYTES",
    "ExecutionResult",
    "GatewayKernelSession",
    "KernelSession",
    "KernelUnavailable",
    "Output",
    "live_sessions",
    "shutdown_all",
    "shutdown_idle",
]
