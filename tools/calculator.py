"""Safe arithmetic: evaluate an expression by walking its syntax tree, never with `eval`.

Only numbers, + - * / // % **, unary signs, parentheses and the functions and
constants below are accepted; names, attributes, calls of anything else, strings
and comprehensions are refused. Every operation that can build a big integer is
checked before it runs, not after: `2**10**10` or `round(1, -10**7)` (which computes
10**(10**7) inside `round`) would otherwise hold the GIL for seconds to hours and eat
memory. Each refusal is a CalculatorError saying which limit was hit.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

MAX_EXPRESSION_CHARS = 1_000
MAX_INT_BITS = 4_096  # about 1,200 decimal digits
# round(x, n) computes 10**|n| for an int x and negative n; past this many digits no int fits anyway.
MAX_ROUND_DIGITS = math.ceil(MAX_INT_BITS * math.log10(2))

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}
_FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "cbrt": math.cbrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "hypot": math.hypot,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
}


class CalculatorError(ValueError):
    """The expression isn't plain arithmetic, or its result would be unreasonable."""


def evaluate(expression: str) -> Number:
    """Value of an arithmetic expression such as `sqrt(2) * (3 + 4) ** 2`."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression is too long (over {MAX_EXPRESSION_CHARS} characters)")
    try:
        return _evaluate(ast.parse(expression.strip(), mode="eval").body)
    except SyntaxError as exc:
        raise CalculatorError(f"not a valid expression: {exc.msg}") from None
    except ZeroDivisionError:
        raise CalculatorError("division by zero") from None
    except OverflowError:
        raise CalculatorError("result is too large") from None
    except RecursionError:
        raise CalculatorError("expression is nested too deeply") from None


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Constant):
        if isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return _bounded(node.value)
        raise CalculatorError(f"only numbers are allowed, not {node.value!r}")
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalculatorError(f"unknown name {node.id!r}; known constants: {', '.join(_CONSTANTS)}")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
        raise CalculatorError("'^' is not supported; use ** for powers")
    if isinstance(node, ast.Call):
        return _call(node)
    raise CalculatorError(f"unsupported syntax: {type(node).__name__}; only arithmetic is allowed")


def _call(node: ast.Call) -> Number:
    if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
        called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise CalculatorError(f"function {called!r} is not allowed; allowed: {', '.join(_FUNCTIONS)}")
    if node.keywords:
        raise CalculatorError("keyword arguments are not supported")
    args = [_evaluate(arg) for arg in node.args]
    if node.func.id == "round":
        _check_round(args)
    try:
        return _bounded(_FUNCTIONS[node.func.id](*args))
    except (TypeError, ValueError) as exc:
        raise CalculatorError(f"{node.func.id}: {exc}") from None


def _check_power(base: Number, exponent: Number) -> None:
    # Estimate the size before computing: int powers are exact and can be astronomically large.
    is_int_power = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0
    if is_int_power and exponent * math.log2(abs(base)) > MAX_INT_BITS:
        raise CalculatorError(f"result is too large (over {MAX_INT_BITS} bits)")


def _check_round(args: list[Number]) -> None:
    if len(args) == 2 and isinstance(args[1], int) and abs(args[1]) > MAX_ROUND_DIGITS:
        raise CalculatorError(f"round: ndigits must be between -{MAX_ROUND_DIGITS} and {MAX_ROUND_DIGITS}")


def _bounded(value: Any) -> Number:
    if isinstance(value, complex):
        raise CalculatorError("result is a complex number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise CalculatorError(f"result is too large (over {MAX_INT_BITS} bits)")
    return value
