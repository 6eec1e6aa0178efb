"""The grading app over real HTTP: access, CSRF, validation, storage; no browser needed."""

from __future__ import annotations

import html
import json
import re
import select
import socket
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute

from potstill.grade.app import create_app
from potstill.grade.rounds import GradingRound, grades_path, open_round
from potstill.runs import RunFolder

from .conftest import TEXTS


@dataclass
class Served:
    run: RunFolder
    grading: GradingRound
    app: Any
    base: str
    ann: str
    bob: str
    admin: str

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.base, headers={**auth, **headers}, timeout=10, follow_redirects=True
        )

    def count(self) -> int:
        with sqlite3.connect(grades_path(self.run)) as db:
            return int(db.execute("SELECT COUNT(*) FROM grades").fetchone()[0])


def serve_round(
    make_run: Callable[..., RunFolder], start_server: Callable[[Any], str], **grade: Any
) -> Served:
    run = make_run({"size": 6, "overlap": 4, "items_per_grader": 5, **grade})
    grading = open_round(run, run.load_config())
    ann, _ = grading.add_grader("ann")
    bob, _ = grading.add_grader("bob")
    admin = grading.store.new_admin_token()
    app = create_app(grading, samples=200)
    base = start_server(app).removesuffix("/v1")
    return Served(run, grading, app, base, ann, bob, admin)


@pytest.fixture
def served(make_run: Callable[..., RunFolder], start_server: Callable[[Any], str]) -> Served:
    return serve_round(make_run, start_server)


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', html))


def pointwise_form(client: httpx.Client, **scores: str) -> dict[str, str]:
    page = client.get("/grade")
    assert page.status_code == 200 and 'data-mode="pointwise"' in page.text
    return {**hidden_fields(page.text), "score_correctness": "4", "score_format": "5", **scores}


def test_no_route_answers_without_a_valid_token(served: Served) -> None:
    routes = [r for r in served.app.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 9
    fill = {"{fmt}": "csv", "{name}": "grade.js"}
    secrets = [*TEXTS[:3], "ann", "bob", "positive"]
    for route in routes:
        path = route.path
        for key, value in fill.items():
            path = path.replace(key, value)
        for method in route.methods:
            for headers in (
                {},
                {"Authorization": "Bearer not-a-token"},
                {"Cookie": "potstill_grader_x=not-a-token"},
            ):
                with served.client(**headers) as client:
                    response = client.request(method, path, data={"csrf": "x"})
                assert response.status_code == 401, (method, path, headers)
                assert not any(s in response.text for s in secrets), (method, path)
    # A grader's token opens no admin route, and the admin token is no grader.
    with served.client(served.ann) as grader, served.client(served.admin) as admin:
        for path in ("/admin", "/api/summary", "/admin/export/grades.csv"):
            assert grader.get(path).status_code == 401
        assert admin.get("/grade").status_code == 401
        assert admin.get("/api/progress").status_code == 401
    with served.client() as anyone:
        assert anyone.get("/login", params={"token": "nope"}).status_code == 401
        assert anyone.get("/docs").status_code == 404  # no API browser either


def test_personal_link_sets_an_httponly_cookie(served: Served) -> None:
    with served.client() as browser:
        login = browser.get("/login", params={"token": served.ann})
        assert login.status_code == 200 and "ann" in login.text  # followed to /grade
        cookie = login.history[0].headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        assert browser.get("/api/progress").json() == {"grader": "ann", "done": 0, "total": 25}
        assert "Content-Security-Policy" in login.headers
        script = browser.get("/static/grade.js")
        assert script.status_code == 200 and "keydown" in script.text


def test_cross_site_posts_are_refused_and_nothing_is_written(served: Served) -> None:
    with served.client(served.ann) as client:
        form = pointwise_form(client)
        evil = client.post("/grade", data=form, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and "Cross-site form post refused" in evil.text
        referer = client.post("/grade", data=form, headers={"Referer": "http://evil.example/x"})
        assert referer.status_code == 403
        forged = client.post("/grade", data={**form, "csrf": "0" * 64})
        assert forged.status_code == 403 and "CSRF" in forged.text
        missing = client.post("/grade", data={k: v for k, v in form.items() if k != "csrf"})
        assert missing.status_code == 403
        plain = client.post(
            "/grade", content="a=b", headers={"Content-Type": "text/plain", "Origin": served.base}
        )
        assert plain.status_code == 415
        assert served.count() == 0
        ok = client.post("/grade", data=form, headers={"Origin": served.base})
        assert ok.status_code == 200 and served.count() == 1  # redirected to the next page


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"score_correctness": "6"}, 422, "'6' is not a whole number 1-5"),
        ({"score_correctness": "0"}, 422, "is not a whole number 1-5"),
        ({"score_format": "4.5"}, 422, "'4.5' is not a whole number"),
        # Digits to str.isdigit, but not ASCII: refused like any other non-number.
        ({"score_format": "³"}, 422, "'³' is not a whole number 1-5"),
        ({"score_format": "③"}, 422, "'③' is not a whole number 1-5"),
        ({"score_format": "٣"}, 422, "'٣' is not a whole number 1-5"),
        ({"score_format": ""}, 422, "format: give a score from 1-5"),
        ({"task": "ffffffffffffffff"}, 404, "Unknown item"),
        ({"nonce": "made-up"}, 400, "does not belong to this item"),
        ({"comment": "x" * 4001}, 422, "longer than 4000"),
        ({"extra": "1"}, 422, "Unexpected field(s) ['extra']"),
    ],
)
def test_invalid_grades_get_a_clear_message_and_write_nothing(
    served: Served, change: dict[str, str], status: int, message: str
) -> None:
    with served.client(served.ann) as client:
        response = client.post("/grade", data=pointwise_form(client, **change))
    assert response.status_code == status
    assert message in html.unescape(response.text)
    assert served.count() == 0


def test_a_field_sent_twice_is_refused(served: Served) -> None:
    with served.client(served.ann) as client:
        form = pointwise_form(client)
        body = httpx.QueryParams(form).add("score_correctness", "1")
        response = client.post(
            "/grade",
            content=str(body),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 422 and "more than once" in response.text
    assert served.count() == 0


def _post_until_answered(served: Served, declared: int | None, cap: int) -> tuple[int, int]:
    """POST /grade as a logged-in grader over a raw socket, sending 64 KiB of body at a time
    until the server answers or `cap` bytes are sent; (status, body bytes sent). The body is
    declared by Content-Length (`declared` bytes) or, with None, sent chunked."""
    parts = urlsplit(served.base)
    framing = f"Content-Length: {declared}" if declared else "Transfer-Encoding: chunked"
    head = (
        f"POST /grade HTTP/1.1\r\nHost: {parts.netloc}\r\nOrigin: {served.base}\r\n"
        f"Authorization: Bearer {served.ann}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\n{framing}\r\n\r\n"
    )
    chunk = b"a" * 65536
    piece = chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode())
        while sent < cap and not select.select([sock], [], [], 0.01)[0]:
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed while this chunk was on its way
            sent += len(chunk)
        try:
            reply = sock.recv(65536)
        except TimeoutError:  # no answer: the server is still reading (buffering) the body
            reply = b""
    return (int(reply.split()[1]) if reply else 0), sent


@pytest.mark.parametrize("declared", [400 * 1024 * 1024, None], ids=["content-length", "chunked"])
def test_a_huge_body_is_refused_while_it_streams_not_after_it_is_buffered(
    served: Served, declared: int | None
) -> None:
    # A 400 MB form from a logged-in grader: refused (413) once the first 64 KiB are past,
    # or at once for a declared length, while the body is still coming; 16 MiB are on offer.
    status, sent = _post_until_answered(served, declared, cap=16 * 1024 * 1024)
    assert status == 413
    assert sent <= 2 * 1024 * 1024, f"{sent} bytes went in before the refusal"
    assert served.count() == 0
    # The server goes on serving.
    with served.client(served.ann) as client:
        assert client.get("/grade").status_code == 200


def test_replayed_submission_is_refused(served: Served) -> None:
    with served.client(served.ann) as client:
        form = pointwise_form(client)
        assert client.post("/grade", data=form).status_code == 200
        replay = client.post("/grade", data=form)
        assert replay.status_code == 409 and "already submitted" in replay.text
        # A second fresh form for a task already graded is refused too.
        store = served.grading.store
        grader = store.grader_for(served.ann)
        assert grader is not None
        again = store.issue_form(grader.grader_id, form["task"], None)
        second = client.post("/grade", data={**form, "nonce": again})
        assert second.status_code == 409 and "already graded" in second.text
    assert served.count() == 1


def test_a_grade_for_an_item_not_assigned_to_the_grader_is_refused(served: Served) -> None:
    store = served.grading.store
    ann, bob = store.grader_for(served.ann), store.grader_for(served.bob)
    assert ann is not None and bob is not None
    only_bob = [
        t
        for t in store.assigned_tasks(bob.grader_id)
        if not store.is_assigned(ann.grader_id, t.task_id)
    ]
    assert only_bob  # the sample has examples outside the overlap
    with served.client(served.ann) as client:
        response = client.post("/grade", data=pointwise_form(client, task=only_bob[0].task_id))
    assert response.status_code == 403 and "not assigned to you" in response.text
    assert served.count() == 0


HOSTILE = (
    "Robert'); DROP TABLE grades;-- <script>window.pwned=1</script><img src=x onerror=alert(1)>"
)


def test_sql_and_html_in_comments_are_stored_verbatim_and_shown_inert(served: Served) -> None:
    with served.client(served.ann) as client:
        assert (
            client.post("/grade", data=pointwise_form(client, comment=HOSTILE)).status_code == 200
        )
        formula = '=HYPERLINK("http://evil.example")'
        assert (
            client.post("/grade", data=pointwise_form(client, comment=formula)).status_code == 200
        )
    with sqlite3.connect(grades_path(served.run)) as db:
        stored = [r[0] for r in db.execute("SELECT comment FROM grades ORDER BY grade_id")]
    assert stored == [HOSTILE, formula]
    with served.client(served.admin) as admin:
        page = admin.get("/admin").text
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in page
        assert "<script>window" not in page and "<img src=x" not in page
        lines = admin.get("/admin/export/grades.jsonl").text.splitlines()
        assert [json.loads(line)["comment"] for line in lines] == [HOSTILE, formula]
        csv_text = admin.get("/admin/export/grades.csv").text
        assert "'=HYPERLINK" in csv_text  # a spreadsheet shows it as text
        assert csv_text.splitlines()[0].startswith("grade_id,grader,mode,example_id,candidate")


def test_pages_are_blind_and_pairwise_verdicts_follow_the_shown_order(
    make_run: Callable[..., RunFolder], start_server: Callable[[Any], str]
) -> None:
    served = serve_round(make_run, start_server, modes=["pairwise"])
    store = served.grading.store
    seen_left = set()
    with served.client(served.ann) as client:
        for _ in range(5):
            page = client.get("/grade").text
            assert not re.search(r"teacher|base_student|distilled", page)
            form = hidden_fields(page)
            assert client.post("/grade", data={**form, "choice": "A"}).status_code == 200
            grade = store.grades()[-1]
            seen_left.add(grade["shown_left"] == grade["candidate"])
            expected = "win" if grade["shown_left"] == grade["candidate"] else "loss"
            assert grade["verdict"] == expected
    assert seen_left == {True, False}  # the candidate appears on both sides


def test_each_grader_has_their_own_order_over_the_shared_items(served: Served) -> None:
    grading, store = served.grading, served.grading.store
    ann, bob = store.grader_for(served.ann), store.grader_for(served.bob)
    assert ann is not None and bob is not None
    orders = [[t.task_id for t in grading.ordered_tasks(g.grader_id)] for g in (ann, bob)]
    shared = set(orders[0]) & set(orders[1])
    assert len(shared) == 4 * 5  # the overlap: 4 examples, 5 pages each
    assert [t for t in orders[0] if t in shared] != [t for t in orders[1] if t in shared]
    assert orders[0] == [t.task_id for t in grading.ordered_tasks(ann.grader_id)]  # stable


def test_admin_adds_a_grader_through_the_page(served: Served) -> None:
    with served.client(served.admin) as admin:
        page = admin.get("/admin").text
        csrf = hidden_fields(page)["csrf"]
        refused = admin.post(
            "/admin/graders",
            data={"csrf": csrf, "name": "cy"},
            headers={"Origin": "http://x.example"},
        )
        assert refused.status_code == 403
        too_long = admin.post("/admin/graders", data={"csrf": csrf, "name": "c" * 81})
        assert too_long.status_code == 422 and "1-80 characters" in too_long.text
        assert [g.name for g in served.grading.store.graders()] == ["ann", "bob"]
        added = admin.post("/admin/graders", data={"csrf": csrf, "name": "cy"})
        assert added.status_code == 200
        link = re.search(r'<code id="new-link">([^<]+)</code>', added.text)
        assert link and link.group(1).startswith(f"{served.base}/login?token=")
    with served.client() as browser:
        landing = browser.get(html.unescape(link.group(1)).removeprefix(served.base))
        assert landing.status_code == 200 and "cy" in landing.text
