"""The bubblewrap command line that confines one program: a kernel, or a shell tool's command.

An allow-list: the sandbox starts from an empty root and sees only what is bound here, the
system's programs and libraries and this Python read-only, the session's working
directory read-write at /mnt/data, a private size-capped /tmp, and nothing else of the
host. It has no network, its own PID, IPC and UTS namespaces, a session of its own (no
TIOCSTI into the app's terminal), no capabilities, and dies with the app.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# Where the session's working directory appears inside: the path ChatGLM3's interpreter prompt names.
MOUNT_POINT = "/mnt/data"
LAUNCHER = Path(__file__).with_name("launcher.py")
LAUNCHER_INSIDE = "/opt/glm-workbench/launcher.py"
# The uid and gid that code sees inside (nobody); on the host it is the app's own uid, or a
# uid of the sandbox's own when the app runs as root (see `Confinement.host_uid`).
UID_INSIDE = 65534
HOSTNAME = "sandbox"

# System directories: bound read-only, or recreated as the symlinks they are on merged-/usr systems.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The few files of /etc that programs need to start (dynamic linker, fonts, time zone, MIME
# types); not passwd, hosts or anything holding the host's secrets.
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime", "mime.types")
# Variables passed through when the app has them: they tune, or keep from crashing, numeric libraries.
PASSED_THROUGH = ("LANG", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Limits:
    """Resource limits of every process in one sandbox, set inside it before the program starts."""

    # Address space of each process; None: unlimited (CUDA maps far more than it uses). Kernels
    # and the shell tool pass KERNEL_MEMORY_MB, the one default for it (glm_client/config.py).
    memory_bytes: int | None = None
    # Processes and threads of one sandbox together: a fork bomb stops here. Room for BLAS and
    # OpenMP thread pools (a thread per core) and a few subprocesses.
    max_processes: int = max(256, 8 * (os.cpu_count() or 1))
    # Largest file a process may write: `open('x','wb').write(...)` of 10 GB fails with EFBIG.
    max_file_bytes: int = 1 * GiB
    # CPU time of each process, so a runaway child dies; a kernel that spends an hour of CPU
    # is restarted like any dead kernel.
    cpu_seconds: int = 3600
    # The private /tmp lives in memory.
    tmp_bytes: int = 512 * MiB

    def rlimits(self) -> dict[str, int]:
        limits = {
            "RLIMIT_NPROC": self.max_processes,
            "RLIMIT_FSIZE": self.max_file_bytes,
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_CORE": 0,
        }
        if self.memory_bytes is not None:
            limits["RLIMIT_AS"] = self.memory_bytes
        return limits


@dataclass(frozen=True)
class Confinement:
    """One sandboxed program's view of the host: its working directory, limits and identity."""

    workdir: Path
    limits: Limits
    # The host uid the code runs as when the app is root (bwrap then maps no user namespace,
    # and root's processes are exempt from RLIMIT_NPROC); None for an unprivileged app,
    # whose sandbox gets a user namespace mapping UID_INSIDE to the app's uid.
    host_uid: int | None = None
    # Directories bound read-write at their own path (the kernel's socket directory).
    shared_dirs: tuple[Path, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def bwrap_command(confinement: Confinement, command: list[str]) -> list[str]:
    """The full argv: bwrap, its options, then the launcher that applies limits and runs `command`."""
    args = ["bwrap", *_namespace_options(confinement.host_uid)]
    # /tmp first: the venv or the kernel's sockets may live under the host's /tmp, and are bound on top.
    args += ["--perms", "1777", "--size", str(confinement.limits.tmp_bytes), "--tmpfs", "/tmp"]
    args += [*_system_mounts(), *_python_mounts(), "--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "0755", "--dir", "/mnt", "--bind", str(confinement.workdir), MOUNT_POINT]
    for directory in confinement.shared_dirs:
        args += ["--bind", str(directory), str(directory)]
    args += ["--perms", "0755", "--dir", "/opt", "--perms", "0755", "--dir", str(Path(LAUNCHER_INSIDE).parent)]
    args += ["--ro-bind", str(LAUNCHER), LAUNCHER_INSIDE]
    args += ["--remount-ro", "/", "--clearenv"]
    for name, value in sorted(sandbox_env(confinement.env).items()):
        args += ["--setenv", name, value]
    # The launcher enters /mnt/data once it is the sandbox's uid: a 0700 directory of that uid is closed to root without CAP_DAC_OVERRIDE.
    launch: dict[str, object] = {"limits": confinement.limits.rlimits(), "cwd": MOUNT_POINT}
    if confinement.host_uid is not None:
        launch |= {"uid": confinement.host_uid, "gid": confinement.host_uid}
    return [*args, "--", sys.executable, "-I", "-S", LAUNCHER_INSIDE, json.dumps(launch), "--", *command]


def sandbox_env(extra: dict[str, str]) -> dict[str, str]:
    """A fixed, minimal environment: nothing of the app's is inherited but a few numeric-library knobs."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
    }
    env |= {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    return env | extra


def _namespace_options(host_uid: int | None) -> list[str]:
    options = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    options += ["--hostname", HOSTNAME, "--new-session", "--die-with-parent"]
    if host_uid is None:  # unprivileged app: a user namespace mapping UID_INSIDE to the app's uid
        options += ["--unshare-user", "--uid", str(UID_INSIDE), "--gid", str(UID_INSIDE), "--cap-drop", "ALL"]
        # bwrap 0.8+: code inside cannot make user namespaces of its own (less kernel attack surface).
        return options + (["--disable-userns"] if _bwrap_supports("--disable-userns") else [])
    # Root app: the launcher needs these two to switch to `host_uid`; setuid then clears them.
    return [*options, "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]


@functools.cache
def _bwrap_supports(option: str) -> bool:
    try:
        usage = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return option in usage


def _system_mounts() -> list[str]:
    args: list[str] = []
    for directory in SYSTEM_DIRS:
        path = Path(directory)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), directory]
        elif path.is_dir():
            args += ["--ro-bind", directory, directory]
    args += ["--perms", "0755", "--dir", "/etc"]  # bwrap makes missing parents 0700: closed to the sandbox's uid
    for name in ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _python_mounts() -> list[str]:
    """This interpreter and its environment (a venv and the Python it was made from), read-only at their own paths."""
    roots = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(sys.executable).resolve().parent.parent}
    args: list[str] = []
    for root in sorted(roots):
        if any(root.is_relative_to(directory) for directory in SYSTEM_DIRS):
            continue
        for parent in reversed(root.parents[:-1]):
            if str(parent) != "/tmp":  # the private /tmp keeps its own 1777
                args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(root), str(root)]
    return args
