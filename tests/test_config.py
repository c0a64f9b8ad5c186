"""Settings: every variable parsed as documented, bad values named, and the values reach their users."""

import inspect
import sys
import types
from pathlib import Path

import pytest

import kernel
import kernel.limits
from glm_client import ConfigError, GenerationParams, Settings
from glm_client.agent import run_turn
from glm_client.testing import ScriptedClient
from tools import ToolRegistry, dispatch_tool, load_tools_dir


def test_defaults_work_on_a_fresh_machine(tmp_path: Path) -> None:
    settings = Settings.from_env({"XDG_CACHE_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")})
    assert settings.model_path == "" and settings.openai_base_url == ""
    assert settings.dialect == "auto" and settings.device == "auto" and settings.max_rounds == 5
    assert settings.cache_dir == tmp_path / "c" / "glm-workbench"
    assert settings.data_dir == tmp_path / "d" / "glm-workbench"
    assert settings.enable_shell_tool is False and settings.enabled_tool_switches == frozenset()
    assert settings.server_api_key == ""
    assert settings.weather_api_url == "https://wttr.in/{city}?format=j1"
    assert (settings.kernel_timeout_s, settings.kernel_memory_mb) == (60.0, 4096)
    assert (settings.models_file, settings.max_loaded_models, settings.models) == ("", 1, ())


def test_cache_dir_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings.from_env({}).cache_dir == Path(tmp_path) / ".cache" / "glm-workbench"


@pytest.mark.parametrize(
    ("variable", "value", "attribute", "expected"),
    [
        ("MODEL_PATH", " /models/glm ", "model_path", "/models/glm"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1", "openai_base_url", "http://127.0.0.1:8000/v1"),
        ("OPENAI_API_KEY", "sk-1", "openai_api_key", "sk-1"),
        ("OPENAI_MODEL", "glm-4", "openai_model", "glm-4"),
        ("DIALECT", " ChatGLM3 ", "dialect", "chatglm3"),
        ("DEVICE", "CPU", "device", "cpu"),
        ("DTYPE", "float16", "dtype", "float16"),
        ("QUANTIZE", "4", "quantize", "4"),
        ("ENGINE", "llamacpp", "engine", "llamacpp"),
        ("CONTEXT_LENGTH", "4096", "context_length", 4096),
        ("PROMPT_CACHE_MB", "512", "prompt_cache_mb", 512),
        ("MAX_ROUNDS", "3", "max_rounds", 3),
        ("TOOLS_DIR", " /srv/tools ", "tools_dir", "/srv/tools"),
        ("ENABLE_SHELL_TOOL", "yes", "enable_shell_tool", True),
        ("ENABLE_SHELL_TOOL", "off", "enable_shell_tool", False),
        ("ENABLE_RM_RF_TOOL", "on", "enabled_tool_switches", frozenset({"ENABLE_RM_RF_TOOL"})),
        ("WEATHER_API_URL", "http://127.0.0.1:9/{city}", "weather_api_url", "http://127.0.0.1:9/{city}"),
        ("GLM_CACHE_DIR", "/var/cache/glm", "cache_dir", Path("/var/cache/glm")),
        ("DATA_DIR", "/var/lib/glm", "data_dir", Path("/var/lib/glm")),
        ("DATABASE_URL", "sqlite:///tmp/x.db", "database_url", "sqlite:///tmp/x.db"),
        ("APP_PASSWORD", " pass word ", "app_password", " pass word "),  # a password is taken as typed
        ("SERVER_API_KEY", " s3cret ", "server_api_key", "s3cret"),
        ("KERNEL_TIMEOUT", "2.5", "kernel_timeout_s", 2.5),
        ("KERNEL_MEMORY_MB", "2048", "kernel_memory_mb", 2048),
        ("KERNEL_SANDBOX", "bwrap", "kernel_sandbox", "bwrap"),
        ("ALLOWED_HOSTS", "API.example.com, *.example.org", "allowed_hosts", ("api.example.com", "*.example.org")),
        ("MARKDOWN_ALLOWED_HOSTS", "img.example.com", "markdown_allowed_hosts", ("img.example.com",)),
        ("MAX_LOADED_MODELS", "2", "max_loaded_models", 2),
    ],
)
def test_each_variable_is_parsed(variable: str, value: str, attribute: str, expected: object) -> None:
    assert getattr(Settings.from_env({variable: value}), attribute) == expected


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DIALECT", "qwen", "DIALECT='qwen' is not valid; use one of: auto, chat_template, chatglm3."),
        ("DEVICE", "tpu", "DEVICE='tpu' is not valid; use one of: auto, cpu, cuda."),
        ("DTYPE", "int3", "DTYPE='int3' is not valid; use one of: auto, bfloat16, float16, float32."),
        ("MAX_ROUNDS", "many", "MAX_ROUNDS='many' is not valid; use a number of at least 1."),
        ("MAX_ROUNDS", "0", "MAX_ROUNDS='0' is not valid; use a number of at least 1."),
        ("KERNEL_MEMORY_MB", "100", "KERNEL_MEMORY_MB='100' is not valid; use a number of at least 256."),
        ("PROMPT_CACHE_MB", "lots", "PROMPT_CACHE_MB='lots' is not valid; use a number of at least 0."),
        ("KERNEL_TIMEOUT", "0.5", "KERNEL_TIMEOUT='0.5' is not valid; use a number of at least 1.0."),
        ("MAX_LOADED_MODELS", "0", "MAX_LOADED_MODELS='0' is not valid; use a number of at least 1."),
        (
            "MODELS_FILE",
            "/nonexistent/models.toml",
            "MODELS_FILE /nonexistent/models.toml cannot be read: No such file or directory.",
        ),
        ("ENABLE_SHELL_TOOL", "maybe", "ENABLE_SHELL_TOOL='maybe' is not valid; use 1/true/yes/on or 0/false/no/off."),
        ("ENABLE_RM_RF_TOOL", "2", "ENABLE_RM_RF_TOOL='2' is not valid; use 1/true/yes/on or 0/false/no/off."),
    ],
)
def test_bad_values_name_the_variable_and_the_allowed_values(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({variable: value})
    assert str(error.value) == expected


def test_each_dangerous_tool_has_its_own_switch() -> None:
    settings = Settings.from_env({"ENABLE_SHELL_TOOL": "1", "ENABLE_RM_RF_TOOL": "0"})
    assert settings.tool_enabled("shell") and not settings.tool_enabled("rm-rf")
    settings = Settings.from_env({"ENABLE_RM_RF_TOOL": "true"})
    assert settings.tool_enabled("rm-rf") and not settings.tool_enabled("shell")
    assert not settings.tool_enabled("rm_rf_x")


@pytest.fixture
def dangerous() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.register(name="shell", dangerous=True, isolated=False)
    def shell() -> str:
        return "ran"

    return registry


def test_enable_shell_tool_switches_the_registrys_shell_tool(
    dangerous: ToolRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ENABLE_SHELL_TOOL", raising=False)
    assert dispatch_tool("shell", {}, registry=dangerous).text == (
        "Tool `shell` is disabled by the operator (set ENABLE_SHELL_TOOL=1 to enable it)."
    )
    monkeypatch.setenv("ENABLE_SHELL_TOOL", "on")  # read on every call, no restart
    assert dispatch_tool("shell", {}, registry=dangerous).text == "ran"


def test_a_bad_switch_keeps_the_tool_off_and_names_the_variable(
    dangerous: ToolRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENABLE_SHELL_TOOL", "maybe")
    result = dispatch_tool("shell", {}, registry=dangerous)
    assert not result.ok
    assert result.text == (
        "Tool `shell` is disabled: ENABLE_SHELL_TOOL='maybe' is not valid; use 1/true/yes/on or 0/false/no/off."
    )


def test_tools_dir_is_what_load_tools_dir_loads_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('loaded')\n")
    monkeypatch.setenv("TOOLS_DIR", str(tmp_path))
    assert [error.message for error in load_tools_dir()] == ["RuntimeError: loaded (line 1)"]
    monkeypatch.setenv("TOOLS_DIR", "")
    assert load_tools_dir() == []


def test_server_api_key_reaches_the_api_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m glm_client.server` requires the key SERVER_API_KEY names (whitespace trimmed)."""
    import glm_client.server as server

    # A stand-in for glm_client.loader, which main() imports: the real one imports torch.
    loader = types.ModuleType("glm_client.loader")
    loader.ModelLoadError = RuntimeError  # type: ignore[attr-defined]
    loader.load_client = lambda settings, progress: ScriptedClient()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "glm_client.loader", loader)
    keys = []
    monkeypatch.setattr(server, "create_app", lambda client, api_key, hosts: keys.append(api_key))
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **options: None)
    monkeypatch.setenv("SERVER_API_KEY", " s3cret ")
    assert server.main([]) == 0
    monkeypatch.delenv("SERVER_API_KEY")
    assert server.main([]) == 0
    assert keys == ["s3cret", None]


def test_code_defaults_are_the_settings_defaults() -> None:
    """One default per setting: the kernel, the agent and the sidebar take theirs from config."""
    defaults = Settings()
    assert defaults.kernel_memory_mb * 2**20 == kernel.DEFAULT_MEMORY_LIMIT
    assert defaults.kernel_timeout_s == kernel.limits.CELL_TIMEOUT_S
    assert inspect.signature(run_turn).parameters["max_rounds"].default == defaults.max_rounds


def test_sidebar_sliders_start_at_the_generation_defaults() -> None:
    pytest.importorskip("streamlit")
    from ui.sidebar import SAMPLING_DEFAULTS as DEFAULTS

    params = GenerationParams(**DEFAULTS)
    assert params == GenerationParams()


def test_generation_params_validate_and_name_unknown_keys() -> None:
    assert GenerationParams.from_kwargs(temperature=0, stop="###").stop == ("###",)
    with pytest.raises(ConfigError, match="Unknown generation parameter"):
        GenerationParams.from_kwargs(temprature=0.5)
    with pytest.raises(ConfigError, match="top_p"):
        GenerationParams(top_p=0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationParams(max_new_tokens=0)
