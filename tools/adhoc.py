"""Ad-hoc tool definitions typed by the user (the Tool page's manual mode), as YAML or JSON."""

from __future__ import annotations

from typing import Any

import yaml
from jsonschema import Draft202012Validator, SchemaError

EXAMPLE = """\
- name: get_current_weather
  description: Get the current weather in a given location
  parameters:
    type: object
    properties:
      location:
        type: string
        description: The city and state, e.g. San Francisco, CA
      unit:
        type: string
        enum: [celsius, fahrenheit]
    required: [location]
"""


def parse_tool_definitions(text: str) -> list[dict[str, Any]]:
    """OpenAI-style tool schemas from a YAML/JSON list of {name, description, parameters}.

    Raises ValueError with a sentence saying what is wrong and where.
    """
    try:
        data = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError as error:
        raise ValueError(f"The tool definitions are not valid YAML or JSON: {error}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError(
            "The tool definitions must be a list of tools, each with a name, a description and parameters."
        )
    tools = []
    for index, item in enumerate(data, start=1):
        item = item.get("function", item) if isinstance(item, dict) else item
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ValueError(f"Tool {index} needs a `name` (text).")
        parameters = item.get("parameters") or {"type": "object", "properties": {}}
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as error:
            raise ValueError(
                f"The parameters of `{item['name']}` are not a valid JSON Schema: {error.message}"
            ) from None
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": item["name"].strip(),
                    "description": str(item.get("description", "")),
                    "parameters": parameters,
                },
            }
        )
    return tools
