"""The bridge from the agent loop to a kernel: an interpreter call in, an observation Message out."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from glm_client.agent import Executor
from glm_client.messages import Message, ToolCall
from glm_client.observations import fit_observation
from glm_client.worker_thread import WorkerThread
from kernel.limits import INTERRUPT_GRACE_S, MAX_OBSERVATION_CHARS
from kernel.result import ExecutionResult
from kernel.session import KernelSession

# How often a waiting page gets control back (to redraw the timer, or to be stopped).
POLL_S = 0.25


def observation_of(result: ExecutionResult, call_id: str | None = None) -> Message:
    """The model reads the text capped at MAX_OBSERVATION_CHARS, with `[Image]` in place (the agent
    caps it further for a short context); the user sees every output."""
    message = Message.observation(
        result.to_observation(max_chars=sys.maxsize),
        name="interpreter",
        tool_call_id=call_id,
        images=result.images,
        is_error=result.status != "ok",
    )
    message.meta["status"] = result.status
    message.meta["duration_s"] = round(result.duration_s, 3)
    return fit_observation(message, MAX_OBSERVATION_CHARS)


def kernel_executor(
    session: KernelSession,
    timeout: float,
    on_wait: Callable[[float], None] | None = None,
) -> Executor:
    """An executor for `run_turn` that runs interpreter calls in `session`.

    With `on_wait`, the code runs in a worker thread while the caller's thread gets
    `on_wait(elapsed_s)` every POLL_S: a Streamlit page stopped there (Stop button)
    raises out of `on_wait`, and the running code is interrupted on the way out.
    """

    def execute(call: ToolCall) -> Message:
        code = call.code if call.is_interpreter else code_argument(call)
        if code is None:
            return Message.observation(
                f"Only the `interpreter` tool is available here, not `{call.name}`; write Python code instead.",
                name=call.name,
                tool_call_id=call.id,
                is_error=True,
            )
        observation = run(code, call.id)
        if not call.is_interpreter:
            # Small models invent a tool per task (`fibonacci`, `sort_list`) with the code as its argument.
            observation.name = call.name
            observation.meta["notices"] = [f"`{call.name}` is not a tool here: its `code` argument ran as Python."]
        return observation

    def run(code: str, call_id: str) -> Message:
        if on_wait is None:
            return observation_of(session.execute(code, timeout=timeout), call_id)
        started = time.monotonic()
        worker = WorkerThread(lambda: session.execute(code, timeout=timeout))
        try:
            while worker.is_alive():
                worker.join(POLL_S)
                on_wait(time.monotonic() - started)
        except BaseException:
            session.interrupt()
            worker.join(INTERRUPT_GRACE_S)
            raise
        return observation_of(worker.result(), call_id)

    return execute


def code_argument(call: ToolCall) -> str | None:
    """The code a call to some other tool carries (`{"code": "..."}`), or None: nothing to run."""
    code = call.arguments.get("code")
    return code if isinstance(code, str) and code.strip() and not call.parse_error else None
