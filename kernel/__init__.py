"""A managed Jupyter kernel for the Code Interpreter mode.

    from kernel import KernelSession
    with KernelSession() as session:
        result = session.execute("print(1 + 1)", timeout=10)
        result.status, result.text, result.images, result.to_observation()

Threat model
------------
The code comes from a language model, which may be wrong, careless or steered by a
prompt injection. The limits protect the app and the machine from *accidents*:

- a cell that loops forever (time limit: interrupt, then restart),
- a memory bomb (RLIMIT_AS on the kernel and its children: MemoryError or a dead kernel,
  never a dead app),
- a flood of output (capped per execution and again for the model),
- a cell waiting for `input()` (refused at once),
- a crashing kernel (detected and restarted),
- leftover processes (each kernel leads its own process group; shutdown kills the tree;
  an atexit hook and `shutdown_idle` reap the rest; if the app is killed outright, ipykernel
  notices its parent is gone and exits, though its own subprocesses may then survive),
- uploads escaping the working directory (names are reduced to a plain basename),
- the app's secrets in the environment (variables named like *_KEY/*_TOKEN/*_SECRET are
  not passed to the kernel),
- other local users talking to the kernel (unix sockets in a private 0700 directory,
  HMAC-signed messages).

It is NOT a sandbox. The kernel runs as the same user as the app, with that user's
files, network and CPU: code can read or delete anything the app can, open connections,
or fork processes (they share the memory cap, not a count limit). The working directory
is a convenience, not a jail. Run the app in a container or VM, as an unprivileged user
without credentials on disk, if model code must not touch the host. RLIMIT_AS is
enforced on Linux only and must be disabled (`memory_limit_bytes=None`) for CUDA.
"""

from kernel.limits import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_TIMEOUT_S,
    MAX_OBSERVATION_CHARS,
    MAX_RESULT_TEXT_CHARS,
    MAX_UPLOAD_BYTES,
)
from kernel.registry import live_sessions, shutdown_all, shutdown_idle
from kernel.result import ExecutionResult, Output
from kernel.session import KernelSession

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_TIMEOUT_S",
    "MAX_OBSERVATION_CHARS",
    "MAX_RESULT_TEXT_CHARS",
    "MAX_UPLOAD_BYTES",
    "ExecutionResult",
    "KernelSession",
    "Output",
    "live_sessions",
    "shutdown_all",
    "shutdown_idle",
]
