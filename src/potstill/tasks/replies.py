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
    """What a reply holds: `found_json` says a JSON object was attempted; `conflict` says the
    reply holds several JSON objects whose answers differ (two candidate answers)."""

    answer: Any = None
    rationale: str | None = None
    found_json: bool = False
    json_error: str | None = None
    conflict: bool = False


def balanced(text: str, start: int, opener: str = "{", closer: str = "}") -> str:
    """The balanced span opening at text[start], respecting strings; the torn rest if it never
    closes (so that a cut-off reply reads as malformed, not as missing)."""
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
        elif ch == opener:
            depth += 1
        elif ch == closer:
            depth -= 1
            if depth == 0:
                return text[start : i + 1]
    return text[start:]


# A brace right after a word, a backslash or another brace opens LaTeX (\\boxed{4},
# \\frac{1}{2}, x^{2}), not a JSON object.
_OBJECT_START = re.compile(r"(?<![\\\w}^])\{")


def _object_start(text: str, after: int = 0) -> int:
    match = _OBJECT_START.search(text, after)
    return match.start() if match else -1


def _first_object(text: str) -> str | None:
    """The first balanced {...} in text, respecting strings; None if there is none."""
    start = _object_start(text)
    return None if start == -1 else balanced(text, start)


def _later_answers(text: str, after: int) -> list[Any]:
    """The `answer` of every further complete JSON object in text, from index `after`."""
    found = []
    start = _object_start(text, after)
    while start != -1:
        chunk = balanced(text, start)
        try:
            data = json.loads(chunk)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            lowered = {str(k).lower(): v for k, v in data.items()}
            if "answer" in lowered:
                found.append(lowered["answer"])
            start = _object_start(text, start + len(chunk))
        else:
            start = _object_start(text, start + 1)
    return found


def fenced_body(reply: str) -> str:
    """The body of the first ```json fence, or the reply itself when there is none."""
    fenced = _FENCE.search(reply)
    return fenced.group(1) if fenced else reply


def split_reply(reply: str) -> ReplyParts:
    """Find a JSON `{"reason": ..., "answer": ...}` in a reply, tolerating fences and prose."""
    body = fenced_body(reply)
    candidate = _first_object(body)
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
    answer = lowered.get("answer")
    rest = reply.find(candidate) + len(candidate) if candidate in reply else len(reply)
    conflict = any(other != answer for other in _later_answers(reply, rest))
    return ReplyParts(
        answer=answer,
        rationale=str(reason) if reason is not None else None,
        found_json=True,
        conflict=conflict,
    )


def find_json_list(reply: str) -> tuple[Any, str | None] | None:
    """The first JSON list in a reply (fenced or in prose): (value, None), or (None, error)
    when one was attempted but does not parse; None when the reply holds no list."""
    body = fenced_body(reply)
    start = body.find("[")
    if start == -1:
        return None
    try:
        return json.loads(balanced(body, start, "[", "]")), None
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg}"


_NUMBER = r"[-+]?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+|(?=\.\d))(?:\.\d+)?"
_NUMBER_WITH_UNIT = re.compile(
    rf"^({_NUMBER})\s*%?\s*([A-Za-z][A-Za-z .'-]*)?\.?$",
    re.IGNORECASE,
)
_ANSWER_MARKER = re.compile(
    r"^(?:the\s+)?(?:final\s+)?(?:answer\s*(?:is\s*:?|:|=)\s*|####\s*)", re.IGNORECASE
)
_FRACTION = re.compile(r"^([-+]?)(?:(\d+)\s+)?(\d+)\s*/\s*(\d+)(?:\s+[A-Za-z][A-Za-z .'-]*)?\.?$")
_LATEX_FRACTION = re.compile(r"^([-+]?)\\[dt]?frac\s*\{\s*(\d+)\s*\}\s*\{\s*(\d+)\s*\}\.?$")
_MATH_WRAPPERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"), ("`", "`"))


def clean_math(text: str) -> str:
    """Plain text of a math answer: LaTeX delimiters, \\boxed{} and markdown taken off."""
    t = text.strip().replace("\u2212", "-").replace("\\$", "$").replace("\\%", "%")
    t = re.sub(r"\\[,!;: ]", "", t).replace("\\left", "").replace("\\right", "")
    t = re.sub(r"\\text\{([^{}]*)\}", r"\1", t)
    changed = True
    while changed:
        changed = False
        for opener, closer in _MATH_WRAPPERS:
            if len(t) > len(opener) + len(closer) and t.startswith(opener) and t.endswith(closer):
                t, changed = t[len(opener) : -len(closer)].strip(), True
        boxed = find_boxed(t)
        if len(boxed) == 1 and t.startswith("\\boxed{") and t.endswith("}"):
            t, changed = boxed[0].strip(), True
    return t


def parse_number(text: str) -> float | None:
    """`$1,000.00` -> 1000.0, `13 apples` -> 13.0, `Answer: 7.` -> 7.0, `3/4` -> 0.75,
    `\\boxed{-2}` -> -2.0, `\\frac{1}{2}` -> 0.5, `#### 42` -> 42.0; else None."""
    t = clean_math(_ANSWER_MARKER.sub("", clean_math(text), count=1))
    fraction = _FRACTION.match(t) or _LATEX_FRACTION.match(t)
    if fraction:
        parts = fraction.groups()
        sign = -1.0 if parts[0] == "-" else 1.0
        whole = float(parts[1]) if len(parts) == 4 and parts[1] else 0.0
        numerator, denominator = float(parts[-2]), float(parts[-1])
        if denominator == 0:
            return None
        return sign * (whole + numerator / denominator)
    match = _NUMBER_WITH_UNIT.match(t)
    if not match:
        return None
    digits = match.group(1).replace("$", "").replace(",", "").replace(" ", "")
    try:
        value = float(digits)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def find_boxed(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` (nested braces allowed), in order."""
    found = []
    start = text.find("\\boxed{")
    while start != -1:
        span = balanced(text, start + len("\\boxed"), "{", "}")
        if span.endswith("}"):
            found.append(span[1:-1])
        start = text.find("\\boxed{", start + 1)
    return found


def find_marked_answers(text: str) -> list[str]:
    """Answers after GSM8K's `#### ` marker, one per line that starts with it."""
    return [m.group(1).strip() for m in re.finditer(r"(?m)^\s*####\s*(.+?)\s*$", text)]


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


_LEAD_MARKER = re.compile(
    r"^(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|label|class|category|prediction|option|choice)"
    r"(?:\s+is)?\s*[:=-]?\s*",
    re.IGNORECASE,
)


def norm_text(text: str) -> str:
    """Lower case, one space between words, surrounding quotes, stars and full stops off."""
    return re.sub(r"\s+", " ", text.strip().strip(".!\"'`*_ ").strip()).lower()


def bare_answers(reply: str) -> list[str]:
    """Where a bare (non-JSON) reply may state its answer, in order: the whole reply, then
    its first line (answer first, explanation after); each without an `Answer:` lead."""
    text = reply.strip()
    if not text:
        return []
    first = text.splitlines()[0]
    found: list[str] = []
    for part in (text, first):
        cleaned = norm_text(part)
        unmarked = norm_text(_LEAD_MARKER.sub("", cleaned, count=1))
        found.extend(c for c in (cleaned, unmarked) if c and c not in found)
    return found
