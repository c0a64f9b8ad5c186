from pathlib import Path

import pytest

from glm_client import ConfigError, GenerationParams, Settings


def test_defaults_work_on_a_fresh_machine(tmp_path):
    settings = Settings.from_env({"XDG_CACHE_HOME": str(tmp_path / "c"), "XDG_DATA_HOME": str(tmp_path / "d")})
    assert settings.model_path == "" and settings.openai_base_url == ""
    assert settings.dialect == "auto" and settings.device == "auto" and settings.max_rounds == 5
    assert settings.cache_dir == tmp_path / "c" / "glm-workbench"
    assert settings.data_dir == tmp_path / "d" / "glm-workbench"
    assert settings.enable_shell_tool is False


def test_cache_dir_falls_back_to_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings.from_env({}).cache_dir == Path(tmp_path) / ".cache" / "glm-workbench"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("DIALECT", "qwen", "DIALECT='qwen' is not valid; use one of: auto, chat_template, chatglm3."),
        ("DEVICE", "tpu", "DEVICE='tpu' is not valid; use one of: auto, cpu, cuda."),
        ("DTYPE", "int3", "DTYPE='int3' is not valid; use one of: auto, bfloat16, float16, float32."),
        ("MAX_ROUNDS", "many", "MAX_ROUNDS='many' is not valid; use a number of at least 1."),
        ("MAX_ROUNDS", "0", "MAX_ROUNDS='0' is not valid; use a number of at least 1."),
        ("ENABLE_SHELL_TOOL", "maybe", "ENABLE_SHELL_TOOL='maybe' is not valid; use 1/true/yes/on or 0/false/no/off."),
    ],
)
def test_bad_values_name_the_variable_and_the_allowed_values(variable, value, expected):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({variable: value})
    assert str(error.value) == expected


def test_values_are_normalised():
    settings = Settings.from_env(
        {"DIALECT": " ChatGLM3 ", "ENABLE_SHELL_TOOL": "yes", "MAX_ROUNDS": "3", "QUANTIZE": "4"}
    )
    assert (settings.dialect, settings.enable_shell_tool, settings.max_rounds, settings.quantize) == (
        "chatglm3",
        True,
        3,
        "4",
    )


def test_generation_params_validate_and_name_unknown_keys():
    assert GenerationParams.from_kwargs(temperature=0, stop="###").stop == ("###",)
    with pytest.raises(ConfigError, match="Unknown generation parameter"):
        GenerationParams.from_kwargs(temprature=0.5)
    with pytest.raises(ConfigError, match="top_p"):
        GenerationParams(top_p=0)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        GenerationParams(max_new_tokens=0)
