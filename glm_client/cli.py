"""Terminal chat with the workbench's model, in the spirit of ChatGLM3's cli_demo.

    python -m glm_client.cli [--tools] [--interpreter] [--system TEXT] [--temperature T] [--max-new-tokens N]

Type a message and read the streamed reply. `clear` starts a new conversation,
`stop` (or Ctrl-D) quits, `/prompt` prints the exact prompt of the last round (special
tokens spelled out), Ctrl-C during a reply stops the reply, not the program.
`--tools` lets the model call the registered tools, `--interpreter` lets it run
Python in a Jupyter kernel; both use the same agent loop as the browser pages.
The model comes from the usual settings (OPENAI_BASE_URL, MODEL_PATH, or the
embedded default).

Like a page, this is an application entry point: it may import `tools` and
`kernel` (lazily, only in the mode that needs them); the rest of glm_client may not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from glm_client.agent import AgentEvent, Executor, ObservationEvent, round_prompt, run_turn
from glm_client.client import Client
from glm_client.config import DEFAULT_MAX_ROUNDS, ConfigError, Settings
from glm_client.dialects.base import INTERPRETER_TOOL, ToolSchema, function_of
from glm_client.events import Done, Notice, TextDelta, ToolCallStart
from glm_client.messages import Message, ToolCall

CLEAR, STOP, PROMPT = "clear", "stop", "/prompt"
DEFAULT_SYSTEM = "You are a helpful, concise assistant."
INTERPRETER_SYSTEM = (
    "You are a helpful assistant with a Python interpreter (no Internet access; files live in its working directory). "
    "To compute, analyse data or draw plots, write Python code: it runs and you see its output. "
    "If the code fails, fix it and try again."
)
MAX_SHOWN_CHARS = 2000  # of an observation in the terminal; the model still reads all of it
YOU, MODEL = "You: ", "Assistant: "


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sys.stdin.isatty():
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (arrow keys and history in input())
    from glm_client.loader import ModelLoadError, load_client

    try:
        settings = Settings.from_env()
        client = load_client(settings, progress=lambda message: print(message, file=sys.stderr, flush=True))
    except (ConfigError, ModelLoadError) as error:
        print(f"The model could not be loaded. {error}", file=sys.stderr)
        return 1
    params = {"temperature": args.temperature, "max_new_tokens": args.max_new_tokens}
    with agent_mode(args.tools, args.interpreter, settings) as (tools, executor, on_interrupt):
        system = args.system or (INTERPRETER_SYSTEM if args.interpreter else DEFAULT_SYSTEM)
        chat = TerminalChat(client, system, tools, executor, settings.max_rounds, on_interrupt)
        chat.run({name: value for name, value in params.items() if value is not None})
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m glm_client.cli",
        description="Chat with the model in the terminal. Commands: 'clear' (new conversation), 'stop' (quit).",
    )
    parser.add_argument("--tools", action="store_true", help="Tool mode: the model may call the registered tools")
    parser.add_argument("--interpreter", action="store_true", help="Code Interpreter: the model may run Python")
    parser.add_argument("--system", help="system prompt (default: a short helpful-assistant prompt)")
    parser.add_argument("--temperature", type=float, help="sampling temperature, 0 for greedy")
    parser.add_argument("--max-new-tokens", type=int, help="longest reply, in tokens")
    return parser.parse_args(argv)


@contextlib.contextmanager
def agent_mode(
    use_tools: bool, use_interpreter: bool, settings: Settings
) -> Iterator[tuple[list[ToolSchema] | None, Executor | None, Callable[[], None]]]:
    """The tools to offer, the executor that runs their calls, and what Ctrl-C should also do."""
    schemas: list[ToolSchema] = []
    run_tool = run_code = None
    session = None
    if use_tools:
        schemas, run_tool = registry_tools(settings)
    if use_interpreter:
        from kernel import KernelSession
        from kernel.executor import kernel_executor

        session = KernelSession(memory_limit_bytes=settings.kernel_memory_mb * 2**20)
        schemas.append(INTERPRETER_TOOL)
        run_code = kernel_executor(session, settings.kernel_timeout_s)

    def execute(call: ToolCall) -> Message:
        runner = run_code if call.is_interpreter and run_code else run_tool
        if runner is None:
            return Message.observation(f"There is no tool named `{call.name}`.", is_error=True)
        return runner(call)

    def interrupt_code() -> None:
        if session is not None and session.busy:
            session.interrupt()

    try:
        yield (schemas or None), (execute if schemas else None), interrupt_code
    finally:
        if session is not None:
            session.shutdown()


def registry_tools(settings: Settings) -> tuple[list[ToolSchema], Executor]:
    """The enabled tools of the `tools` registry (plus TOOLS_DIR), and an executor that dispatches to them."""
    import tools
    from tools.executor import tool_executor

    for problem in tools.load_tools_dir(settings.tools_dir):
        print(f"[tools] {problem}", file=sys.stderr)
    for trouble in mcp_problems(settings):
        print(f"[mcp] {trouble}", file=sys.stderr)
    return tools.get_tools(), tool_executor()


def mcp_problems(settings: Settings) -> list[str]:
    """Connect the MCP servers of MCP_CONFIG (their tools join the registry); what went wrong, one line each."""
    from tools.mcp_config import McpConfigError, config_path
    from tools.mcp_manager import load_mcp_servers

    path = config_path(settings)
    if path is None:
        return []
    try:
        statuses = load_mcp_servers(path)
    except McpConfigError as error:
        return [str(error)]
    return [f"server {status.name!r} failed: {status.error}" for status in statuses if status.state == "failed"]


class TerminalChat:
    """The read-reply loop; prints each event of a turn as it arrives."""

    def __init__(
        self,
        client: Client,
        system: str,
        tools: list[ToolSchema] | None = None,
        executor: Executor | None = None,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
        on_interrupt: Callable[[], None] = lambda: None,
        out: TextIO | None = None,
    ) -> None:
        self.client = client
        self.system = system
        self.tools = tools
        self.executor = executor
        self.max_rounds = max_rounds
        self.on_interrupt = on_interrupt
        self.out = out or sys.stdout
        self.conversation = self.new_conversation()

    def new_conversation(self) -> list[Message]:
        return [Message.system(self.system)] if self.system else []

    def run(self, params: dict[str, Any]) -> None:
        names = {function_of(tool).get("name") for tool in self.tools or []}
        features = [
            name
            for name, on in (("tools", names - {"interpreter"}), ("a Python interpreter", "interpreter" in names))
            if on
        ]
        mode = f" with {' and '.join(features)}" if features else ""
        self.say(
            f"Chatting with {self.client.info.name}{mode}. "
            f"'{CLEAR}' starts a new conversation, '{STOP}' quits, '{PROMPT}' shows the last prompt; "
            "Ctrl-C stops a reply.\n"
        )
        while True:
            try:
                line = input(f"\n{YOU}")
            except EOFError:
                break
            except KeyboardInterrupt:
                self.say(f"\n(type '{STOP}' to quit)\n")
                continue
            command = line.strip()
            if command == STOP:
                break
            if command == CLEAR:
                self.conversation = self.new_conversation()
                self.say("(new conversation)\n")
            elif command == PROMPT:
                self.show_last_prompt()
            elif command:
                self.conversation.append(Message.user(line))
                self.reply(params)
        self.say("\n")

    def reply(self, params: dict[str, Any]) -> None:
        """One turn of the agent; Ctrl-C stops it and keeps what was written."""
        self.say(MODEL)
        with stop_on_ctrl_c(self.on_interrupt) as cancel:
            events = run_turn(
                self.client,
                self.conversation,
                self.executor,
                self.tools,
                max_rounds=self.max_rounds,
                cancel=cancel,
                **params,
            )
            try:
                for event in events:
                    self.show(event)
            except KeyboardInterrupt:  # a second Ctrl-C: the reply did not stop at the first
                events.close()
                self.say("\n[stopped]")
        self.say("\n")

    def show_last_prompt(self) -> None:
        """The exact prompt of the last reply's last round (special tokens spelled out)."""
        last = next(
            (i for i in range(len(self.conversation) - 1, -1, -1) if self.conversation[i].role == "assistant"), None
        )
        if last is None:
            self.say("(no reply yet: the prompt is shown after the model has answered)\n")
            return
        try:
            view = round_prompt(self.client, self.conversation, last, self.tools or [])
        except ValueError as error:
            self.say(f"[error] The prompt could not be rendered: {error}\n")
            return
        count = f"{view.token_count} tokens" if view.token_count is not None else "tokens counted by the server"
        self.say(f"--- prompt of the last round ({count}) ---\n{view.text}\n--- end of prompt ---\n")

    def show(self, event: AgentEvent) -> None:
        if isinstance(event, TextDelta):
            self.say(event.text)
        elif isinstance(event, ToolCallStart):
            self.say(f"\n  [calling {event.name}…]")
        elif isinstance(event, ToolCall):
            self.say("\n" + describe_call(event))
        elif isinstance(event, ObservationEvent):
            self.say("\n" + describe_observation(event.message) + f"\n{MODEL}")
        elif isinstance(event, Notice):
            self.say(f"\n[note] {event.message}")
        elif isinstance(event, Done):
            if event.finish_reason == "error":
                self.say(f"\n[error] {event.error or 'The model failed.'}")
            elif event.finish_reason == "cancelled":
                self.say("\n[stopped]")
            elif event.finish_reason == "length":
                self.say("\n[the reply reached the max-new-tokens limit]")

    def say(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()  # piped output must stream too


def describe_call(call: ToolCall) -> str:
    if call.parse_error:
        return f"  → malformed call to {call.name or 'a tool'}: {call.parse_error}"
    if call.is_interpreter:
        return "  → run code:\n" + indent(call.code)
    return f"  → {call.name}({json.dumps(call.arguments, ensure_ascii=False)})"


def describe_observation(message: Message) -> str:
    text = message.content.rstrip()
    if len(text) > MAX_SHOWN_CHARS:
        text = text[:MAX_SHOWN_CHARS] + f"\n… ({len(message.content) - MAX_SHOWN_CHARS} more characters)"
    if message.images:
        text += f"\n[{len(message.images)} image(s), not shown in the terminal]"
    label = "  ← error:" if message.is_error else "  ←"
    return f"{label}\n{indent(text)}" if "\n" in text else f"{label} {text}"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


@contextlib.contextmanager
def stop_on_ctrl_c(on_interrupt: Callable[[], None]) -> Iterator[threading.Event]:
    """While the block runs, Ctrl-C sets the returned event (and calls `on_interrupt`) instead of raising.

    Generation checks the event at every token and stops cleanly; a second Ctrl-C
    raises KeyboardInterrupt as usual, in case something does not listen.
    """
    cancel = threading.Event()

    def handle(_signum: int, _frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        on_interrupt()

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield cancel
        return
    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield cancel
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
