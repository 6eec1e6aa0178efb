"""What the grading pages do, apart from HTTP routing: access checks, the next page for a
grader, validation of a posted grade, the admin page and exports.

Every check raises `Refused` with a status and a message for the person; a grade is written
only after every check has passed.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jinja2 import Environment

from potstill.evaluate.rubrics import HIGH, LOW
from potstill.grade.agreement import load_judge_verdicts
from potstill.grade.rounds import GradingRound, evaluation_order
from potstill.grade.store import AlreadyGraded, Grader, GradingTask
from potstill.grade.summary import render_section, summarize_grades, template_env

MAX_BODY = 64 * 1024
MAX_COMMENT = 4000
MAX_NAME = 80
SECURITY_HEADERS = {
    # Pages load only their own script and stylesheet; inline script never runs.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on
    # its own form posts, and the origin check below would refuse them.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
STATIC = {"grade.js": "text/javascript", "grade.css": "text/css"}


class Refused(Exception):
    """A request refused with a status and a message for the person who sent it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class GradingApp:
    """The request handling, apart from FastAPI's routing (see `create_app`)."""

    def __init__(self, grading: GradingRound, samples: int = 1000) -> None:
        self.round = grading
        self.store = grading.store
        self.samples = samples
        secret = self.store.meta("csrf_secret") or ""
        self.secret = secret.encode()
        # Per grades.sqlite, so two runs served on one host keep separate sessions.
        suffix = hashlib.sha256(self.secret).hexdigest()[:10]
        self.grader_cookie = f"potstill_grader_{suffix}"
        self.admin_cookie = f"potstill_admin_{suffix}"
        self.env: Environment = template_env()

    # -- access -----------------------------------------------------------------------

    def csrf_token(self, token: str) -> str:
        return hmac.new(self.secret, f"csrf:{token}".encode(), hashlib.sha256).hexdigest()

    def grader(self, cookies: dict[str, str], auth: str | None) -> tuple[Grader, str]:
        token = _bearer(auth) or cookies.get(self.grader_cookie, "")
        found = self.store.grader_for(token) if token else None
        if found is None:
            raise Refused(401, "This page needs your personal grading link.")
        return found, token

    def admin(self, cookies: dict[str, str], auth: str | None) -> str:
        token = _bearer(auth) or cookies.get(self.admin_cookie, "")
        if not token or not self.store.is_admin(token):
            raise Refused(401, "This page needs the admin link.")
        return token

    @staticmethod
    def check_origin(headers: dict[str, str]) -> None:
        """Refuse a post whose Origin (or, without one, Referer) is another site."""
        host = headers.get("host", "")
        origin = headers.get("origin") or headers.get("referer")
        if origin and urlsplit(origin).netloc != host:
            raise Refused(403, "Cross-site form post refused: it did not come from this site.")

    def check_csrf(self, fields: dict[str, str], token: str) -> None:
        """Refuse a form without this session's CSRF token (another site cannot know it)."""
        sent = fields.get("csrf", "")
        if not hmac.compare_digest(sent.encode(), self.csrf_token(token).encode()):
            raise Refused(403, "Form token missing or wrong (CSRF check); reload the page.")

    # -- grader pages -----------------------------------------------------------------

    def next_task(self, grader: Grader) -> tuple[GradingTask | None, int, int]:
        tasks = self.round.ordered_tasks(grader.grader_id)
        done = self.store.graded_task_ids(grader.grader_id)
        pending = [t for t in tasks if t.task_id not in done]
        graded = len(tasks) - len(pending)
        return (pending[0] if pending else None), graded, len(tasks)

    def grade_page(self, grader: Grader, token: str) -> str:
        task, done, total = self.next_task(grader)
        context: dict[str, Any] = {
            "grader": grader.name,
            "done": done,
            "total": total,
            "csrf": self.csrf_token(token),
        }
        if task is None:
            return self.render("done.html.j2", **context)
        example = self.round.examples[task.example_id]
        left = self.round.shown_left(grader.grader_id, task)
        context.update(
            task_id=task.task_id,
            nonce=self.store.issue_form(grader.grader_id, task.task_id, left),
            inputs=example.inputs,
            reference=example.reference,
        )
        if task.mode == "pointwise":
            return self.render(
                "pointwise.html.j2",
                **context,
                answer=self.round.reply(task.candidate, task.example_id),
                rubric=self.round.rubric,
                low=LOW,
                high=HIGH,
            )
        assert task.opponent is not None and left is not None
        right = task.opponent if left == task.candidate else task.candidate
        return self.render(
            "pairwise.html.j2",
            **context,
            answer_a=self.round.reply(left, task.example_id),
            answer_b=self.round.reply(right, task.example_id),
        )

    def submit(self, grader: Grader, fields: dict[str, str]) -> None:
        """Validate a posted grade fully, then write it; any failure writes nothing."""
        task = self.store.tasks().get(fields.get("task", ""))
        if task is None:
            raise Refused(404, "Unknown item: no grading task has this id. Nothing was saved.")
        if not self.store.is_assigned(grader.grader_id, task.task_id):
            raise Refused(403, "This item is not assigned to you. Nothing was saved.")
        form = self.store.form(fields.get("nonce", ""))
        if form is None or form.grader_id != grader.grader_id or form.task_id != task.task_id:
            raise Refused(400, "This form does not belong to this item; reload the page.")
        if form.used_at is not None:
            raise Refused(409, "This form was already submitted (replayed); nothing was saved.")
        comment = fields.get("comment", "").strip()
        if len(comment) > MAX_COMMENT:
            raise Refused(422, f"The comment is longer than {MAX_COMMENT} characters.")
        expected = {"csrf", "task", "nonce", "comment"}
        if task.mode == "pointwise":
            scores = self._scores(fields)
            verdict = None
            expected |= {f"score_{c.name}" for c in self.round.rubric}
        else:
            scores, verdict = {}, self._verdict(fields, task, form.shown_left)
            expected.add("choice")
        unknown = sorted(set(fields) - expected)
        if unknown:
            raise Refused(422, f"Unexpected field(s) {unknown}; nothing was saved.")
        try:
            self.store.record_grade(form, verdict, scores, comment)
        except AlreadyGraded as exc:
            raise Refused(409, f"Not saved: {exc}.") from None

    def _scores(self, fields: dict[str, str]) -> dict[str, int]:
        scores: dict[str, int] = {}
        problems = []
        for criterion in self.round.rubric:
            raw = fields.get(f"score_{criterion.name}", "").strip()
            span = f"{LOW}-{HIGH}"
            if not raw:
                problems.append(f"{criterion.name}: give a score from {span}")
            # ASCII digits only: "³" and "③" are digits to str.isdigit, not to int().
            elif not (raw.isascii() and raw.isdigit()) or not (LOW <= int(raw) <= HIGH):
                problems.append(f"{criterion.name}: {raw[:20]!r} is not a whole number {span}")
            else:
                scores[criterion.name] = int(raw)
        if problems:
            raise Refused(422, "Not saved. " + "; ".join(problems) + ".")
        return scores

    @staticmethod
    def _verdict(fields: dict[str, str], task: GradingTask, left: str | None) -> str:
        choice = fields.get("choice", "")
        if choice not in ("A", "tie", "B"):
            raise Refused(422, "Not saved. Choose A better, tie or B better.")
        if choice == "tie":
            return "tie"
        picked_left = choice == "A"
        return "win" if picked_left == (left == task.candidate) else "loss"

    # -- admin ----------------------------------------------------------------------

    def summary(self) -> dict[str, Any] | None:
        grades = self.store.grades()
        if not grades:
            return None
        judge = load_judge_verdicts(self.round.run)
        order = evaluation_order(self.round.run)
        seed = self.round.config.seed
        return summarize_grades(grades, self.store.progress(), judge, self.samples, seed, order)

    def admin_page(self, token: str, new_link: tuple[str, str] | None = None) -> str:
        summary = self.summary()
        return self.render(
            "admin.html.j2",
            progress=self.store.progress(),
            section=render_section(summary, "html") if summary else None,
            comments=summary["comments"] if summary else [],
            csrf=self.csrf_token(token),
            new_link=new_link,
            sample_size=len(self.store.sample()),
            overlap=self.round.config.overlap,
            notes=self.round.notes,
        )

    def add_grader(self, fields: dict[str, str], base_url: str) -> tuple[str, str]:
        name = fields.get("name", "").strip()
        if not name or len(name) > MAX_NAME:
            raise Refused(422, f"A grader's name must be 1-{MAX_NAME} characters.")
        token, _ = self.round.add_grader(name)
        return name, login_link(base_url, token)

    def export(self, fmt: str) -> str:
        rows = [_flat(g, [c.name for c in self.round.rubric]) for g in self.store.grades()]
        if fmt == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        out = io.StringIO()
        columns = list(rows[0]) if rows else ["grade_id"]
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
        return out.getvalue()

    def render(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)

    def error_page(self, refused: Refused, signed_in: bool) -> str:
        return self.render("error.html.j2", message=refused.message, styled=signed_in)


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _flat(grade: dict[str, Any], criteria: list[str]) -> dict[str, Any]:
    row = {k: v for k, v in grade.items() if k != "scores"}
    for name in criteria:
        row[f"score_{name}"] = grade["scores"].get(name)
    return row


def _cell(value: Any) -> Any:
    """Spreadsheets run a cell that starts with = + - @ as a formula; a leading quote keeps
    such text inert. JSONL keeps the comment exactly as typed."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def login_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/login?token={token}"


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """An urlencoded form body; each field at most once."""
    if len(body) > MAX_BODY:
        raise Refused(413, "The form is too large.")
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise Refused(415, "Send the form as application/x-www-form-urlencoded.")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=40)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "The form could not be read.") from None
    repeated = sorted(k for k, v in parsed.items() if len(v) > 1)
    if repeated:
        raise Refused(422, f"Field(s) {repeated} sent more than once; nothing was saved.")
    return {k: v[0] for k, v in parsed.items()}


def static_file(name: str) -> str:
    return resources.files("potstill.grade").joinpath("static").joinpath(name).read_text("utf-8")


def finite(value: Any) -> Any:
    """JSON has no NaN: an undefined coefficient becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    return value
