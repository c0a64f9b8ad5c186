"""Whether model-written code runs sandboxed: KERNEL_SANDBOX and this machine decide, once per process."""

from __future__ import annotations

import functools
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sandbox.bwrap import Confinement, Limits, bwrap_command

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 20.0
# When the app runs as root, each sandbox runs as a uid of its own from this range: no such
# user owns anything on the host, and RLIMIT_NPROC counts each sandbox's processes apart.
HOST_UID_RANGE = range(2_000_000_000, 2_100_000_000)

INSTALL_FIX = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
USERNS_FIX = (
    "allow unprivileged user namespaces: on Ubuntu 24.04 and later AppArmor restricts them "
    "(sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor profile for bwrap); "
    "in a container, start it with user namespaces allowed"
)
NONE_ON_PURPOSE = "or set KERNEL_SANDBOX=none to run code unconfined on purpose"


@dataclass(frozen=True)
class SandboxChoice:
    """How code runs: in a bwrap sandbox, unconfined (with the reason), or not at all (with the fix)."""

    mode: Literal["bwrap", "none", "refused"]
    reason: str = ""

    @property
    def sandboxed(self) -> bool:
        return self.mode == "bwrap"


def configured_sandbox() -> SandboxChoice:
    """The sandbox the settings ask for: KERNEL_SANDBOX, and APP_PASSWORD marking a shared deployment."""
    from glm_client.config import Settings  # here: `import tools` (and so sandbox) stays free of glm_client

    settings = Settings.from_env()
    return choose_sandbox(settings.kernel_sandbox, shared=bool(settings.app_password))


def choose_sandbox(setting: str, shared: bool) -> SandboxChoice:
    """The sandbox for KERNEL_SANDBOX=`setting`; `shared` (APP_PASSWORD set) makes a missing sandbox fatal.

    Fails closed: `bwrap` that cannot start, or `auto` on a shared deployment without a
    sandbox, refuses to run code; only an explicit `none` runs it unconfined there.
    """
    if setting == "none":
        return SandboxChoice("none", "KERNEL_SANDBOX=none: code runs unconfined, with the app's rights.")
    problem = bwrap_problem()
    if problem is None:
        return SandboxChoice("bwrap")
    if setting == "bwrap":
        return SandboxChoice("refused", f"Code is not run: KERNEL_SANDBOX=bwrap, but {problem}.")
    if shared:
        return SandboxChoice(
            "refused", f"Code is not run: this app is shared (APP_PASSWORD is set) and {problem} ({NONE_ON_PURPOSE})."
        )
    choice = SandboxChoice("none", f"Code runs unconfined, with the app's rights: {problem}.")
    _warn_once(choice.reason)
    return choice


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


@functools.cache
def bwrap_problem() -> str | None:
    """Why no bwrap sandbox can start on this machine (with the fix), or None when one can. Probed once."""
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed: {INSTALL_FIX}"
    with tempfile.TemporaryDirectory(prefix="glm-sandbox-probe-") as workdir:
        uid = claim_workdir(Path(workdir))
        command = bwrap_command(Confinement(Path(workdir), Limits(), uid), [sys.executable, "-I", "-S", "-c", "pass"])
        try:
            probe = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"the bubblewrap sandbox could not start ({error})"
    if probe.returncode == 0:
        return None
    detail = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else f"exit code {probe.returncode}"
    if "uid map" in detail or "namespace" in detail:
        return f"the bubblewrap sandbox could not start ({detail}): {USERNS_FIX}"
    return f"the bubblewrap sandbox could not start ({detail})"


def host_uid_for_sandbox() -> int | None:
    """A fresh uid for one sandbox when the app runs as root; None otherwise (a user namespace maps the app's)."""
    if os.geteuid() != 0:
        return None
    return HOST_UID_RANGE.start + secrets.randbelow(len(HOST_UID_RANGE))


def claim_workdir(workdir: Path) -> int | None:
    """The uid sandboxes over `workdir` run as: its owner when a sandbox already owns it, else a fresh one.

    So a kernel's restarts and the shell tool over the same working directory share one uid,
    and each can change what the others wrote. None when the app is not root.
    """
    if os.geteuid() != 0:
        return None
    owner = workdir.stat().st_uid
    if owner in HOST_UID_RANGE:
        return owner
    uid = host_uid_for_sandbox()
    assert uid is not None
    os.chown(workdir, uid, uid)
    return uid
