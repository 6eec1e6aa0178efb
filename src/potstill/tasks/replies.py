"""Reading model replies: JSON objects inside prose or code fences, numbers with units."""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class ReplyParts:
    """What a reply holds: `found_json` says a JSON object was attempted."""

    answer: Any = None
    rationale: str | None = None
    found_json: bool = False
    json_error: str | None = None


def _first_object(text: str) -> str | None:
    """The first balanced {...} in text, respecting strings; None if there is none."""
    start = text.find("{")
    while start != -1:
        depth, in_str, escaped = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_str:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_str = False
            elif ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : i + 1]
        return text[start:]  # unbalanced: hand back the torn object so it reads as malformed
    return None


def split_reply(reply: str) -> ReplyParts:
    """Find a JSON `{"reason": ..., "answer": ...}` in a reply, tolerating fences and prose."""
    fenced = _FENCE.search(reply)
    candidate = _first_object(fenced.group(1) if fenced else reply)
    if candidate is None:
        return ReplyParts()
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as exc:
        return ReplyParts(found_json=True, json_error=f"invalid JSON: {exc.msg}")
    if not isinstance(data, dict):
        return ReplyParts(found_json=True, json_error="JSON is not an object")
    lowered = {str(k).lower(): v for k, v in data.items()}
    reason = lowered.get("reason", lowered.get("rationale"))
    return ReplyParts(
        answer=lowered.get("answer"),
        rationale=str(reason) if reason is not None else None,
        found_json=True,
    )


_NUMBER = r"[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
_NUMBER_WITH_UNIT = re.compile(
    rf"^(?:the\s+)?(?:final\s+)?(?:answer\s*(?:is|:)\s*)?({_NUMBER})"
    r"\s*%?\s*([A-Za-z][A-Za-z .'-]*)?\.?$",
    re.IGNORECASE,
)


def parse_number(text: str) -> float | None:
    """`$1,000.00` -> 1000.0, `13 apples` -> 13.0, `Answer: 7.` -> 7.0; else None."""
    match = _NUMBER_WITH_UNIT.match(text.strip())
    if not match:
        return None
    digits = match.group(1).replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = float(digits)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


_OPS: dict[type, Any] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.left), _eval(node.right)))
    raise ValueError("not plain arithmetic")


_EXPR_CHARS = re.compile(r"^[\d\s+\-*/().,$x×÷]+$")


def calculate(text: str) -> float | None:
    """Evaluate plain arithmetic (numbers, + - * / and parentheses) safely; else None.

    `22 - 9 = 15` evaluates the left side: the calculator, not the model, does the sums.
    """
    expr = text.strip().rstrip(".").split("=")[0].strip()
    if not expr or not _EXPR_CHARS.match(expr) or not re.search(r"\d", expr):
        return None
    expr = expr.replace("$", "").replace("×", "*").replace("x", "*").replace("÷", "/")
    expr = re.sub(r"(?<=\d),(?=\d{3}\b)", "", expr)
    if len(expr) > 200:
        return None
    try:
        value = _eval(ast.parse(expr, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return value if math.isfinite(value) else None


_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_EXPRESSION_IN_TEXT = re.compile(r"\(?\s*\d[\d,.]*(?:\s*[-+*/×÷]\s*\(?\s*\d[\d,.]*\s*\)?)+")


def find_expression(text: str) -> float | None:
    """The value of the first arithmetic expression (with an operator) inside prose."""
    for match in _EXPRESSION_IN_TEXT.finditer(text):
        value = calculate(match.group(0).rstrip("."))
        if value is not None:
            return value
    return None


def last_number(text: str) -> float | None:
    """The last number written in prose (lm-eval's flexible extraction), or None."""
    found = _NUMBER_IN_TEXT.findall(text)
    return parse_number(found[-1].rstrip(".")) if found else None


def format_number(value: float) -> str:
    """A canonical string for a number: `13`, `2.5`."""
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"
