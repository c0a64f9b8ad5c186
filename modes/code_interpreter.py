"""Code Interpreter mode: the model writes Python, a kernel of this browser session runs it."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import streamlit as st

from glm_client import Message
from glm_client.agent import run_turn
from glm_client.dialects.base import INTERPRETER_TOOL
from kernel import KernelSession, KernelUnavailable, shutdown_idle
from kernel.executor import kernel_executor
from ui import state
from ui.conversation import CallProgress, answer, render_history
from ui.history import history_sidebar
from ui.model import get_client, settings
from ui.render import safe_label, safe_markdown
from ui.sidebar import model_facts, sampling_controls
from ui.workspace import session_workdir

MODE = "code_interpreter"
IDLE_KERNEL_S = 30 * 60  # a kernel unused this long is shut down; the next run starts a fresh one
MAX_DOWNLOAD_BYTES = 50 * 1024 * 1024
MAX_DOWNLOAD_BUTTONS = 50
SYSTEM_PROMPT_TEMPLATE = (
    "You are a helpful assistant that solves tasks by writing Python code. "
    "Write the code in one ```python block; it runs in a Jupyter kernel and you will see its output "
    "(text, tables; plots appear to the user as [Image]). numpy, pandas and matplotlib are installed. "
    "Files are in {cwd}, the current working directory: the user's uploads are there; save new files there. "
    "There is no internet access. When you have the result, answer in words."
)


def prewarm(kernel: KernelSession) -> None:
    with contextlib.suppress(KernelUnavailable):  # the first run reports it, in words
        kernel.start()


def start_kernel() -> KernelSession:
    kernel = KernelSession(session_workdir(), memory_limit_bytes=settings().kernel_memory_mb * 1024 * 1024)
    # Pre-warm: the kernel starts while the page draws, so the first run does not wait for it.
    threading.Thread(target=prewarm, args=(kernel,), daemon=True).start()
    return kernel


@st.cache_resource(
    scope="session",
    show_spinner=False,
    validate=lambda kernel: not kernel.closed,
    on_release=lambda kernel: kernel.shutdown(),
)
def session_kernel() -> KernelSession:
    """One kernel per browser session, shut down when the session ends (or after idling)."""
    return start_kernel()


def kernel_sidebar(kernel: KernelSession) -> None:
    with st.sidebar.expander("Kernel", expanded=True):
        left, right = st.columns(2)
        if left.button("⏹ Interrupt", key="ci_interrupt", help="Stop the running code (KeyboardInterrupt)"):
            kernel.interrupt()
        if right.button("🔄 Restart", key="ci_restart", help="Fresh kernel: variables are lost, files stay"):
            kernel.restart()
            st.toast("Kernel restarted.")
        st.caption(f"Working directory: `{kernel.cwd}`")
        if kernel.sandbox.sandboxed:
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
        size = path.lstat().st_size
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

    st.download_button(safe_label(f"⬇️ {relative}"), contents, file_name=path.name, key=f"download_{relative}")


def save_uploads(kernel: KernelSession, uploads: list) -> list[str]:
    """Store attached files in the working directory; returns the names the model is told."""
    saved = []
    for upload in uploads:
        try:
            saved.append(kernel.save_upload(upload.name, upload.getvalue()).name)
        except ValueError as error:
            st.error(safe_markdown(f"{upload.name}: {error}"))
    return saved


shutdown_idle(IDLE_KERNEL_S)
client = get_client()
kernel = session_kernel()
conversation = state.current(MODE)
messages = conversation.messages
history_sidebar(conversation)
params = sampling_controls(MODE, {"temperature": 0.3})
default_prompt = SYSTEM_PROMPT_TEMPLATE.format(cwd=kernel.cwd)
system_prompt = st.sidebar.text_area("System prompt", default_prompt, height=200, key=f"{MODE}_system_prompt")
kernel_sidebar(kernel)
model_facts(client, messages)

st.title("🧑‍💻 Code Interpreter")
if kernel.sandbox.mode == "refused":
    st.error(kernel.sandbox.reason, icon="⛔")
elif not kernel.sandbox.sandboxed:
    st.warning(kernel.sandbox.reason, icon="⚠️")
render_history(messages)
if messages and st.button("🧹 Clear", key="ci_clear", help="Start a new conversation (this one stays in the list)"):
    state.open_conversation(MODE, None)
    st.rerun()

submission = st.chat_input(
    "Ask for an analysis, a plot, a calculation… (attach files with the clip)",
    accept_file="multiple",
    submit_mode="stop",
    key="ci_input",
)
if submission is not None and (submission.text.strip() or submission.files):
    names = save_uploads(kernel, submission.files)
    text = submission.text.strip()
    if names:
        text += f"\n\n[Uploaded to {kernel.cwd}: " + ", ".join(names) + "]"
    messages.append(Message.user(text.strip()))
    state.request_answer(MODE)
    with st.chat_message("user", avatar="🧑"):
        st.markdown(safe_markdown(text))

if state.should_answer(MODE, messages):
    conversation.set_system_prompt(system_prompt)
    conversation.save()
    conversation.save_params(params)
    progress = CallProgress()
    executor = kernel_executor(kernel, settings().kernel_timeout_s, on_wait=progress)
    turn = run_turn(client, messages, executor, [INTERPRETER_TOOL], max_rounds=settings().max_rounds, **params)
    answer(conversation, turn, progress)
    st.rerun()
