"""All configuration in one place: environment variables, parsed and checked once.

Each setting has a default that works on a fresh laptop. A bad value raises
`ConfigError` with one sentence naming the variable and what it accepts; the
README's configuration table lists the same variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from glm_client.loop_guard import MIN_LOOP_TOKENS

if TYPE_CHECKING:
    from glm_client.models import ModelSpec


class ConfigError(ValueError):
    """A setting has a value the workbench can't use; the message names it and the allowed values."""


DIALECTS = ("auto", "chat_template", "chatglm3")
TOOL_CALL_FORMATS = ("auto", "hermes", "glm45", "glm4")  # how chat-template models write calls
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZE = ("auto", "none", "4", "8")
ENGINES = ("auto", "transformers", "llamacpp")
KERNEL_SANDBOXES = ("auto", "bwrap", "none")

# Defaults that code outside Settings also needs (agent, kernel); written once, here.
DEFAULT_MAX_ROUNDS = 5
DEFAULT_KERNEL_TIMEOUT_S = 60.0  # a cell that loops forever must not hang the conversation
# RLIMIT_AS of a kernel: address space, not resident memory. Measured with
# bench/bench_kernel_memory.py (2 CPUs, MALLOC_ARENA_MAX=2; VmSize/VmRSS): numpy, pandas and
# matplotlib 0.55/0.17 GB; plus `import torch` 1.0/0.35 GB (it fails at 512 MiB). torch's
# thread pool, one thread per core, then adds about 16 MiB of address space per thread:
# 1.04 GB with 2 threads, 1.27 GB with 16, 2.04 GB with 64, so a torch matmul dies at 1 GiB
# on 2 cores and at 1.5 GiB on 64. 2 GiB would leave no room for data on a 64-core host;
# 4 GiB leaves about 2 GB there and still stops a memory bomb long before it hurts the host.
DEFAULT_KERNEL_MEMORY_MB = 4096
DEFAULT_WEATHER_API_URL = "https://wttr.in/{city}?format=j1"  # wttr.in's JSON API
# Memory for the KV caches of finished turns, kept so a conversation's next turn prefills only
# what is new (engines/prompt_cache.py). The embedded model's take 23 KB a token (bf16; 46 KB in
# float32 where the decode attention kernel cannot be built): 2 GiB keeps 8 users' conversations
# in all three modes at about 3,000 tokens each (bench/bench_load.py).
DEFAULT_PROMPT_CACHE_MB = 2048

# ENABLE_<NAME>_TOOL: the switch of a dangerous tool (tools/registry.py).
_TOOL_SWITCH = re.compile(r"ENABLE_[A-Z0-9_]+_TOOL")


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one reply. temperature 0 means greedy decoding.

    `force_tool` ("any" or a tool's name) makes the reply a call to one of the offered
    tools (or that one), by constrained decoding (glm_client/constrained.py).
    """

    # The ChatGLM3 demo's defaults, with a repetition penalty that makes small models loop less;
    # the sidebar's sliders start here too (ui/sidebar.py).
    temperature: float = 0.8
    top_p: float = 0.8
    max_new_tokens: int = 512
    repetition_penalty: float = 1.1
    # A reply stops once it has written one block of tokens (a line, a phrase) 3 times or more in a
    # row, over at least this many tokens (glm_client/loop_guard.py); 0 lets a loop run on to
    # max_new_tokens. Local models only.
    loop_stop_tokens: int = 64
    stop: tuple[str, ...] = ()
    seed: int | None = None
    force_tool: str | None = None
    # Thinking on or off, for templates that take `enable_thinking`; None leaves the template's default.
    enable_thinking: bool | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError(f"temperature must be between 0 and 2, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}.")
        if not 0.5 <= self.repetition_penalty <= 2.0:
            raise ConfigError(f"repetition_penalty must be between 0.5 and 2, got {self.repetition_penalty}.")
        if self.loop_stop_tokens != 0 and self.loop_stop_tokens < MIN_LOOP_TOKENS:
            raise ConfigError(
                f"loop_stop_tokens must be 0 (off) or at least {MIN_LOOP_TOKENS}, got {self.loop_stop_tokens}."
            )
        if self.force_tool is not None and not (isinstance(self.force_tool, str) and self.force_tool.strip()):
            raise ConfigError(f'force_tool must be "any" or the name of a tool, got {self.force_tool!r}.')

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> GenerationParams:
        """Build from keyword arguments, naming any that are unknown."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ConfigError(
                f"Unknown generation parameter(s): {', '.join(unknown)}; allowed: {', '.join(sorted(known))}."
            )
        values = {key: value for key, value in kwargs.items() if value is not None}
        if "stop" in values:
            stop = values["stop"]
            values["stop"] = (stop,) if isinstance(stop, str) else tuple(stop)  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not valid; use one of: {', '.join(allowed)}.")
    return value


def _number(env: Mapping[str, str], name: str, default: float, minimum: float, kind: type = int) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not valid; use a number of at least {minimum}.") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is not valid; use a number of at least {minimum}.")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool = False) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name}={raw!r} is not valid; use 1/true/yes/on or 0/false/no/off.")


def _gateway_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str:
    """A gateway's base URL (scheme://host[:port][/path]), without a trailing slash; empty if unset."""
    raw = env.get(name, "").strip().rstrip("/")
    if raw and not re.fullmatch(rf"({'|'.join(schemes)})://[^\s/?#]+(/[^\s?#]*)?", raw, re.IGNORECASE):
        shown = re.sub(r"//[^/@]*@", "//…@", raw)  # never echo credentials
        raise ConfigError(
            f"{name}={shown!r} is not valid; use a {' or '.join(schemes)} URL such as {schemes[0]}://host:8888."
        )
    return raw


# A host name, an IPv4 address or a bracketed IPv6 one, optionally "*." for any subdomain; no port.
_HOST = re.compile(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]")


def tool_switch(tool_name: str) -> str:
    """The variable that turns on the dangerous tool `tool_name`: ENABLE_<NAME>_TOOL."""
    return f"ENABLE_{re.sub(r'[^A-Za-z0-9]', '_', tool_name).upper()}_TOOL"


def _tool_switches(env: Mapping[str, str]) -> frozenset[str]:
    """Every ENABLE_<NAME>_TOOL variable that is on; a bad value is an error, as for any flag."""
    return frozenset(name for name in env if _TOOL_SWITCH.fullmatch(name) and _flag(env, name))


def _hosts(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated host names, lower-cased; "*" allows any host (behind a proxy that checks)."""
    hosts = tuple(part.strip().lower() for part in env.get(name, "").split(",") if part.strip())
    for host in hosts:
        if host != "*" and not _HOST.fullmatch(host):
            raise ConfigError(
                f"{name}={env[name].strip()!r} is not valid; use comma-separated host names such as "
                "api.example.com or *.example.com, without scheme, port or path."
            )
    return hosts


def _models(path: str, env: Mapping[str, str]) -> tuple[ModelSpec, ...]:
    """MODELS_FILE's models; a bad file is a ConfigError naming the table and the key."""
    if not path:
        return ()
    from glm_client.models import read_models_file  # that module imports this one

    return read_models_file(path, env)


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """Where converted models are cached: $XDG_CACHE_HOME or ~/.cache, under glm-workbench."""
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "glm-workbench"


def default_data_dir(env: Mapping[str, str]) -> Path:
    """Where conversations and per-session working directories live."""
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "glm-workbench"


@dataclass(frozen=True)
class Settings:
    model_path: str = ""
    openai_base_url: str = field(default="", repr=False)  # may hold user:password@
    openai_api_key: str = field(default="", repr=False)
    openai_model: str = ""
    openai_thinking_switch: bool = False  # the server's template takes enable_thinking: show the switch
    dialect: str = "auto"
    tool_call_format: str = "auto"  # auto: read off the chat template (dialects/call_formats.py)
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "auto"  # auto: int4 for the embedded model (its GGUF is 4-bit already), none otherwise
    engine: str = "auto"  # auto: llama.cpp for GGUF models when llama-cpp-python is installed
    context_length: int = 0  # 0: what the model declares (capped at MAX_AUTO_CONTEXT)
    prompt_cache_mb: int = DEFAULT_PROMPT_CACHE_MB
    max_rounds: int = DEFAULT_MAX_ROUNDS
    tools_dir: str = ""  # empty: no extra tools
    mcp_config: str = ""  # MCP servers (mcpServers JSON); empty: DATA_DIR/mcp.json when it exists
    enable_shell_tool: bool = False
    # ENABLE_<NAME>_TOOL variables set on for other dangerous tools (the shell's is the field above).
    enabled_tool_switches: frozenset[str] = frozenset()
    weather_api_url: str = DEFAULT_WEATHER_API_URL  # {city} is filled in; tests point it at a local server
    cache_dir: Path = field(default_factory=lambda: default_cache_dir(os.environ))
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    database_url: str = field(default="", repr=False)  # empty: SQLite in data_dir; may hold a password
    app_password: str = field(default="", repr=False)  # never in logs
    server_api_key: str = field(default="", repr=False)  # empty: the API server asks for no key
    kernel_timeout_s: float = DEFAULT_KERNEL_TIMEOUT_S
    kernel_memory_mb: int = DEFAULT_KERNEL_MEMORY_MB
    kernel_sandbox: str = "auto"  # auto: bwrap when it can start here; see sandbox/policy.py
    # Kernels on a Jupyter Kernel Gateway / Enterprise Gateway (kernel/gateway.py); empty: local kernels.
    kernel_gateway_url: str = field(default="", repr=False)  # may hold user:password@
    kernel_gateway_token: str = field(default="", repr=False)  # never in logs or messages
    kernel_gateway_kernel_name: str = "python3"
    kernel_gateway_connect_timeout_s: float = 10.0
    kernel_gateway_request_timeout_s: float = 60.0  # starting a kernel pod can take this long
    kernel_gateway_validate_cert: bool = True
    kernel_gateway_ws_url: str = field(default="", repr=False)  # empty: KERNEL_GATEWAY_URL with ws(s)://
    allowed_hosts: tuple[str, ...] = ()  # Host names the API server answers besides loopback ones
    markdown_allowed_hosts: tuple[str, ...] = ()  # hosts whose images and links in model text are shown
    models_file: str = ""  # TOML naming the models to switch between (glm_client/models.py); empty: the one above
    max_loaded_models: int = 1  # local models kept loaded at once; the least recently used is unloaded
    models: tuple[ModelSpec, ...] = field(default=(), repr=False)  # MODELS_FILE's models, read at start

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        models_file = env.get("MODELS_FILE", "").strip()
        return cls(
            model_path=env.get("MODEL_PATH", "").strip(),
            openai_base_url=env.get("OPENAI_BASE_URL", "").strip(),
            openai_api_key=env.get("OPENAI_API_KEY", "").strip(),
            openai_model=env.get("OPENAI_MODEL", "").strip(),
            openai_thinking_switch=_flag(env, "OPENAI_THINKING_SWITCH"),
            dialect=_choice(env, "DIALECT", DIALECTS, "auto"),
            tool_call_format=_choice(env, "TOOL_CALL_FORMAT", TOOL_CALL_FORMATS, "auto"),
            device=_choice(env, "DEVICE", DEVICES, "auto"),
            dtype=_choice(env, "DTYPE", DTYPES, "auto"),
            quantize=_choice(env, "QUANTIZE", QUANTIZE, "auto"),
            engine=_choice(env, "ENGINE", ENGINES, "auto"),
            context_length=int(_number(env, "CONTEXT_LENGTH", 0, 0)),
            prompt_cache_mb=int(_number(env, "PROMPT_CACHE_MB", DEFAULT_PROMPT_CACHE_MB, 0)),
            max_rounds=int(_number(env, "MAX_ROUNDS", DEFAULT_MAX_ROUNDS, 1)),
            tools_dir=env.get("TOOLS_DIR", "").strip(),
            mcp_config=env.get("MCP_CONFIG", "").strip(),
            enable_shell_tool=_flag(env, "ENABLE_SHELL_TOOL"),
            enabled_tool_switches=_tool_switches(env) - {"ENABLE_SHELL_TOOL"},
            weather_api_url=env.get("WEATHER_API_URL", "").strip() or DEFAULT_WEATHER_API_URL,
            cache_dir=Path(env["GLM_CACHE_DIR"]) if env.get("GLM_CACHE_DIR") else default_cache_dir(env),
            data_dir=Path(env["DATA_DIR"]) if env.get("DATA_DIR") else default_data_dir(env),
            database_url=env.get("DATABASE_URL", "").strip(),
            app_password=env.get("APP_PASSWORD", ""),
            server_api_key=env.get("SERVER_API_KEY", "").strip(),
            kernel_timeout_s=float(_number(env, "KERNEL_TIMEOUT", DEFAULT_KERNEL_TIMEOUT_S, 1.0, float)),
            kernel_memory_mb=int(_number(env, "KERNEL_MEMORY_MB", DEFAULT_KERNEL_MEMORY_MB, 256)),
            kernel_sandbox=_choice(env, "KERNEL_SANDBOX", KERNEL_SANDBOXES, "auto"),
            kernel_gateway_url=_gateway_url(env, "KERNEL_GATEWAY_URL", ("http", "https")),
            kernel_gateway_token=env.get("KERNEL_GATEWAY_TOKEN", "").strip(),
            kernel_gateway_kernel_name=env.get("KERNEL_GATEWAY_KERNEL_NAME", "").strip() or "python3",
            kernel_gateway_connect_timeout_s=float(_number(env, "KERNEL_GATEWAY_CONNECT_TIMEOUT_S", 10.0, 0.1, float)),
            kernel_gateway_request_timeout_s=float(_number(env, "KERNEL_GATEWAY_REQUEST_TIMEOUT_S", 60.0, 1.0, float)),
            kernel_gateway_validate_cert=_flag(env, "KERNEL_GATEWAY_VALIDATE_CERT", default=True),
            kernel_gateway_ws_url=_gateway_url(env, "KERNEL_GATEWAY_WS_URL", ("ws", "wss")),
            allowed_hosts=_hosts(env, "ALLOWED_HOSTS"),
            markdown_allowed_hosts=_hosts(env, "MARKDOWN_ALLOWED_HOSTS"),
            models_file=models_file,
            max_loaded_models=int(_number(env, "MAX_LOADED_MODELS", 1, 1)),
            models=_models(models_file, env),
        )

    def tool_enabled(self, tool_name: str) -> bool:
        """Whether the operator turned on the dangerous tool `tool_name` (ENABLE_<NAME>_TOOL)."""
        switch = tool_switch(tool_name)
        return self.enable_shell_tool if switch == "ENABLE_SHELL_TOOL" else switch in self.enabled_tool_switches
