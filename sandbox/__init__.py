"""Confinement for model-written code: bubblewrap sandboxes for kernels and the shell tool.

    choice = configured_sandbox()  # from KERNEL_SANDBOX and APP_PASSWORD
    if choice.sandboxed:
        argv = bwrap_command(Confinement(workdir, Limits(), claim_workdir(workdir)), ["python", ...])

Threat model: README "Security" and kernel/__init__.py.
"""

from sandbox.bwrap import MOUNT_POINT, Confinement, Limits, bwrap_command, sandbox_env
from sandbox.policy import SandboxChoice, bwrap_problem, choose_sandbox, claim_workdir, configured_sandbox

__all__ = [
    "MOUNT_POINT",
    "Confinement",
    "Limits",
    "SandboxChoice",
    "bwrap_command",
    "bwrap_problem",
    "choose_sandbox",
    "claim_workdir",
    "configured_sandbox",
    "sandbox_env",
]
