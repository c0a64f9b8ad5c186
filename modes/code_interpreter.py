"""Code Interpreter mode: the model writes Python, a kernel of this conversation runs it."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from glm_client.dialects.base import INTERPRETER_TOOL
from kernel import KernelSession, KernelUnavailable, shutdown_idle
from kernel.executor import kernel_executor
from kernel.gateway import configured_gateway
from sandbox.bwrap import MOUNT_POINT
from sandbox.policy import configured_sandbox
from ui.conversation import CallProgress
from ui.kernels import session_kernel_slot
from ui.model import settings
from ui.page import ModePage
from ui.prompts import CODE_INTERPRETER_SYSTEM_PROMPT
from ui.render import safe_label, safe_markdown

MODE = "code_interpreter"
IDLE_KERNEL_S = 30 * 60  # a kernel unused this long is shut down; the next run starts a fresh one
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BUTTONS = 50


def kernel_sidebar(kernel: KernelSession) -> None:
    with st.sidebar.expander("Kernel", expanded=True):
        st.button(
            "⏹ Interrupt the code",
            key=f"{MODE}_interrupt",
            help="Stop the running code (KeyboardInterrupt); a reply being written stops too",
            on_click=kernel.interrupt,
            width="stretch",
        )
        if st.button(
            "🔄 Restart the kernel",
            key=f"{MODE}_restart",
            help="Fresh kernel: variables are lost, files stay",
            width="stretch",
        ):
            try:
                kernel.restart()
                st.toast("Kernel restarted.")
            except KernelUnavailable as error:  # a gateway that is away: say so, the next run tries again
                st.error(str(error))
        st.caption(f"Working directory: `{kernel.cwd}`")
        if kernel.remote:
            st.caption(safe_markdown(f"🌐 {kernel.sandbox.reason}"))
        elif kernel.sandbox.sandboxed:
            st.caption("🔒 Sandboxed (bubblewrap): no network, nothing of the host but this directory.")
        else:
            st.caption("⚠️ Not sandboxed: code runs with the app's rights.")
        files = kernel.list_files()
        for path in files[:MAX_DOWNLOAD_BUTTONS]:
            download_button(kernel, path)
        if len(files) > MAX_DOWNLOAD_BUTTONS:
            st.caption(f"… and more files; the first {MAX_DOWNLOAD_BUTTONS} are listed.")
        if not files:
            st.caption("No files yet. Attach files to a message to upload them.")


def download_button(kernel: KernelSession, path: Path) -> None:
    """A button that reads the file only when clicked; its key is its path, unique in the directory."""
    relative = path.relative_to(kernel.workdir).as_posix()
    try:
        size = kernel.file_size(path)
    except OSError:  # removed while the page drew
        return
    if size > MAX_DOWNLOAD_BYTES:
        st.caption(safe_markdown(f"{relative} ({size // 1024 // 1024} MB, too large to download here)"))
        return

    def contents() -> bytes:
        try:
            return kernel.read_file(path, MAX_DOWNLOAD_BYTES)
        except (OSError, ValueError):  # changed or replaced by a link since the listing
            return b""

    st.download_button(safe_label(f"⬇️ {relative}"), contents, file_name=path.name, key=f"{MODE}_download_{relative}")


def save_uploads(kernel: KernelSession, uploads: list) -> list[str]:
    """Store attached files in the working directory; returns the names the model is told."""
    saved = []
    for upload in uploads:
        try:
            saved.append(kernel.save_upload(upload.name, upload.getvalue()).name)
        except ValueError as error:
            st.error(safe_markdown(f"{upload.name}: {error}"))
    return saved


def kernel_state_notice(kernel: KernelSession, page: ModePage) -> None:
    """Say plainly when earlier code's variables are gone (the kernel ended or restarted) and files stayed."""
    ran_code = any(message.role == "observation" for message in page.messages)
    if ran_code and not kernel.holds_state:
        st.info(
            "This conversation's earlier kernel is gone (restarted, idle too long, or the page was reloaded): "
            "variables from earlier code were lost; files in the working directory were kept.",
            icon="🔁",
        )


shutdown_idle(IDLE_KERNEL_S)
# Sandboxed, the directory is /mnt/data for every conversation; otherwise the kernel starts in it.
where = MOUNT_POINT if configured_sandbox().sandboxed and not configured_gateway() else "the current working directory"
page = ModePage(MODE, {"system_prompt": CODE_INTERPRETER_SYSTEM_PROMPT.format(cwd=where), "temperature": 0.3})
kernel = session_kernel_slot().kernel_for(page.conversation.id)
params = page.sidebar_settings(system_prompt_height=200)
kernel_sidebar(kernel)
page.keep_settings()

if kernel.remote:
    if kernel.problem:  # the gateway is away or refuses us: one sentence; the next run tries again
        st.error(kernel.problem, icon="🔌")
elif kernel.sandbox.mode == "refused":
    st.error(kernel.sandbox.reason, icon="⛔")
elif not kernel.sandbox.sandboxed:
    st.warning(kernel.sandbox.reason, icon="⚠️")
page.show_history("🧑‍💻 Code Interpreter", [INTERPRETER_TOOL])
kernel_state_notice(kernel, page)

submission = page.chat_input("Ask for an analysis, a plot, a calculation… (attach files with +)", accept_file=True)
if submission is not None and (submission.text.strip() or submission.files):
    names = save_uploads(kernel, submission.files)
    text = submission.text.strip()
    if names:
        text += f"\n\n[Uploaded to {kernel.cwd}: " + ", ".join(names) + "]"
    page.add_user_message(text.strip())

progress = CallProgress()
executor = kernel_executor(kernel, settings().kernel_timeout_s, on_wait=progress)
page.respond(page.start_turn(executor, [INTERPRETER_TOOL], max_rounds=settings().max_rounds, **params), progress)
