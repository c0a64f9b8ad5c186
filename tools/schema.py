"""JSON Schema for a Python function's parameters, from its type hints and docstring.

A small generator of our own rather than `transformers.utils.get_json_schema`: that
one takes seconds to import, refuses a docstring that doesn't describe every
argument, and doesn't know ChatGLM3's `Annotated[type, "description", required]`.
"""

from __future__ import annotations

import enum
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

# Google-style section headers; the description is the text before the first one.
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Returns|Return|Yields|Raises|Examples?|Notes?):\s*$")
_ARGS_SECTION = ("Args", "Arguments", "Parameters", "Params")
# "name: text" or "name (type): text" inside the Args section.
_ARG_LINE = re.compile(r"^\s*\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")

_SIMPLE_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


class SchemaError(TypeError):
    """A function signature that can't be described as JSON Schema (e.g. a custom class parameter)."""


@dataclass(frozen=True)
class FunctionSchema:
    description: str
    parameters: dict[str, Any]


def function_schema(func: Callable[..., Any]) -> FunctionSchema:
    """Describe `func`: docstring summary plus an object schema of its named parameters."""
    description, arg_docs = parse_docstring(inspect.getdoc(func) or "")
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference
        raise SchemaError(f"cannot read the type hints of {func.__name__}: {exc}") from exc

    properties: dict[str, Any] = {}
    required: list[str] = []
    accepts_extra = False
    for param in inspect.signature(func).parameters.values():
        if param.kind is param.VAR_KEYWORD:
            accepts_extra = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            continue  # the model passes keyword arguments only
        annotation = hints.get(param.name, Any)
        annotation, doc, required_flag = _split_annotated(annotation)
        try:
            schema = type_schema(annotation)
        except SchemaError as exc:
            raise SchemaError(f"parameter {param.name!r} of {func.__name__}: {exc}") from None
        doc = doc or arg_docs.get(param.name)
        if doc:
            schema["description"] = doc
        has_default = param.default is not inspect.Parameter.empty
        if has_default and _is_json_value(param.default):
            schema["default"] = param.default
        required_by_signature = not (has_default or _is_optional(annotation))
        if required_by_signature if required_flag is None else required_flag:
            required.append(param.name)
        properties[param.name] = schema

    parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required}
    if not accepts_extra:
        parameters["additionalProperties"] = False
    return FunctionSchema(description, parameters)


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into (description, {argument: description})."""
    description: list[str] = []
    arg_docs: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None  # indentation of the argument lines; deeper lines continue one
    for line in inspect.cleandoc(doc).splitlines():
        header = _SECTION.match(line)
        if header:
            section, current, arg_indent = header.group(1), None, None
            continue
        if section is None:
            description.append(line)
        elif section in _ARGS_SECTION and line.strip():
            indent = len(line) - len(line.lstrip())
            match = _ARG_LINE.match(line)
            if match and (arg_indent is None or indent <= arg_indent):
                arg_indent = indent
                current = match.group(1)
                arg_docs[current] = match.group(2).strip()
            elif current:
                arg_docs[current] = f"{arg_docs[current]} {line.strip()}".strip()
    return "\n".join(description).strip(), arg_docs


def type_schema(annotation: Any) -> dict[str, Any]:
    """JSON Schema for one type annotation."""
    annotation, _, _ = _split_annotated(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty:
        return {}
    if annotation in _SIMPLE_TYPES:
        return {"type": _SIMPLE_TYPES[annotation]}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _enum_schema([member.value for member in annotation])

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return _enum_schema(list(args))
    if origin in (Union, types.UnionType):
        return _union_schema(args)
    if annotation in (list, set, frozenset, Sequence) or origin in (list, set, frozenset, Sequence):
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if annotation is tuple or origin is tuple:
        return _tuple_schema(args)
    if annotation in (dict, Mapping) or origin in (dict, Mapping):
        value_type = args[1] if len(args) == 2 else Any
        value_schema = type_schema(value_type)
        return {"type": "object", "additionalProperties": value_schema} if value_schema else {"type": "object"}
    raise SchemaError(f"unsupported type annotation {annotation!r}")


def _split_annotated(annotation: Any) -> tuple[Any, str | None, bool | None]:
    """Unwrap `Annotated[type, "description", required]` (ChatGLM3's convention)."""
    if typing.get_origin(annotation) is not Annotated:
        return annotation, None, None
    base, *extras = typing.get_args(annotation)
    description = next((extra for extra in extras if isinstance(extra, str)), None)
    required = next((extra for extra in extras if isinstance(extra, bool)), None)
    return base, description, required


def _is_optional(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin in (Union, types.UnionType) and type(None) in typing.get_args(annotation)


def _union_schema(args: tuple[Any, ...]) -> dict[str, Any]:
    schemas = [type_schema(arg) for arg in args]
    if any(not schema for schema in schemas):  # Any in a union accepts everything
        return {}
    if all(set(schema) == {"type"} for schema in schemas):  # int | None -> {"type": ["integer", "null"]}
        return {"type": [schema["type"] for schema in schemas]}
    return {"anyOf": schemas}


def _tuple_schema(args: tuple[Any, ...]) -> dict[str, Any]:
    if not args:
        return {"type": "array"}
    if len(args) == 2 and args[1] is Ellipsis:  # tuple[int, ...]
        return {"type": "array", "items": type_schema(args[0])}
    item_schemas = [type_schema(arg) for arg in args]
    schema: dict[str, Any] = {"type": "array", "minItems": len(args), "maxItems": len(args)}
    if all(item == item_schemas[0] for item in item_schemas):
        schema["items"] = item_schemas[0]
    else:
        schema["prefixItems"] = item_schemas
    return schema


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    types_present = {_SIMPLE_TYPES.get(type(value)) for value in values}
    schema: dict[str, Any] = {"enum": values}
    if len(types_present) == 1 and None not in types_present:
        schema = {"type": types_present.pop(), **schema}
    return schema


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_json_value(item) for key, item in value.items())
    return False
