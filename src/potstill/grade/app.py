"""The grading web app: blind pointwise and pairwise pages for graders, an admin page.

Access: a personal link `/login?token=...` sets an HttpOnly cookie (a grader's and the
admin's are separate); an API client may send `Authorization: Bearer TOKEN` instead. Every
route but /login needs a valid token. Posted forms must come from this origin (the `Origin`
header) and carry the session's CSRF token; each rendered grading form carries a one-time
nonce, so a replayed submission is refused. Nothing is written unless every check passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.concurrency import run_in_threadpool

from potstill.grade.pages import (
    MAX_BODY,
    SECURITY_HEADERS,
    STATIC,
    GradingApp,
    Refused,
    finite,
    parse_form,
    static_file,
)
from potstill.grade.rounds import GradingRound


class BodyLimit:
    """Refuse a request body over `limit` bytes while it streams in, before it is buffered:
    a declared Content-Length over the limit is refused before a byte of the body is read,
    and a body without one (chunked) when the bytes read so far pass the limit. The refusal
    (`Refused(413)`) is raised where the route reads the body, so it gets the app's own
    error page; nothing is written, as for every refusal."""

    def __init__(self, app: Any, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.limit
        received = 0

        async def limited() -> Any:
            nonlocal received
            if too_large:
                raise Refused(413, "The form is too large.")
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise Refused(413, "The form is too large.")
            return message

        await self.app(scope, limited, send)


def _auth(request: Request) -> str | None:
    return request.headers.get("authorization")


def _headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


async def _form(request: Request, logic: GradingApp, token: str) -> dict[str, str]:
    """A posted form that came from this site with this session's CSRF token."""
    logic.check_origin(_headers(request))
    fields = parse_form(await request.body(), request.headers.get("content-type", ""))
    logic.check_csrf(fields, token)
    return fields


def create_app(grading: GradingRound, samples: int = 1000) -> FastAPI:
    """The FastAPI app for one grading round."""
    logic = GradingApp(grading, samples)
    app = FastAPI(title="potstill grade", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=MAX_BODY)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:
        path = request.url.path
        if path.startswith("/api/") or path.startswith("/admin/export"):
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        return HTMLResponse(logic.error_page(exc, exc.status != 401), status_code=exc.status)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Any:
        response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    @app.get("/login")
    def login(token: str = "") -> Response:
        if token and logic.store.grader_for(token) is not None:
            target, cookie = "/grade", logic.grader_cookie
        elif token and logic.store.is_admin(token):
            target, cookie = "/admin", logic.admin_cookie
        else:
            raise Refused(401, "This link is not valid (it may have been replaced).")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            cookie, token, max_age=30 * 24 * 3600, httponly=True, samesite="lax", path="/"
        )
        return response

    @app.get("/")
    def home(request: Request) -> Response:
        try:
            logic.grader(dict(request.cookies), _auth(request))
            return RedirectResponse("/grade", status_code=303)
        except Refused:
            logic.admin(dict(request.cookies), _auth(request))
            return RedirectResponse("/admin", status_code=303)

    @app.get("/static/{name}")
    def static(request: Request, name: str) -> Response:
        try:
            logic.grader(dict(request.cookies), _auth(request))
        except Refused:
            logic.admin(dict(request.cookies), _auth(request))
        if name not in STATIC:
            raise Refused(404, "No such file.")
        return Response(static_file(name), media_type=STATIC[name])

    _grader_routes(app, logic)
    _admin_routes(app, logic)
    return app


def _grader_routes(app: FastAPI, logic: GradingApp) -> None:
    @app.get("/grade", response_class=HTMLResponse)
    def grade_page(request: Request) -> str:
        grader, token = logic.grader(dict(request.cookies), _auth(request))
        return logic.grade_page(grader, token)

    @app.post("/grade")
    async def grade_submit(request: Request) -> Response:
        grader, token = logic.grader(dict(request.cookies), _auth(request))
        fields = await _form(request, logic, token)
        await run_in_threadpool(logic.submit, grader, fields)
        return RedirectResponse("/grade", status_code=303)

    @app.get("/api/progress")
    def progress(request: Request) -> dict[str, Any]:
        grader, _ = logic.grader(dict(request.cookies), _auth(request))
        _, done, total = logic.next_task(grader)
        return {"grader": grader.name, "done": done, "total": total}


def _admin_routes(app: FastAPI, logic: GradingApp) -> None:
    @app.get("/admin", response_class=HTMLResponse)
    def admin_page(request: Request) -> str:
        token = logic.admin(dict(request.cookies), _auth(request))
        return logic.admin_page(token)

    @app.post("/admin/graders", response_class=HTMLResponse)
    async def add_grader(request: Request) -> str:
        token = logic.admin(dict(request.cookies), _auth(request))
        fields = await _form(request, logic, token)
        unknown = sorted(set(fields) - {"csrf", "name"})
        if unknown:
            raise Refused(422, f"Unexpected field(s) {unknown}.")
        base = f"{request.url.scheme}://{request.headers.get('host', '')}"
        new_link = await run_in_threadpool(logic.add_grader, fields, base)
        return logic.admin_page(token, new_link)

    @app.get("/api/summary")
    def summary(request: Request) -> JSONResponse:
        logic.admin(dict(request.cookies), _auth(request))
        return JSONResponse(finite(logic.summary()))

    @app.get("/admin/export/grades.{fmt}")
    def export(request: Request, fmt: str) -> Response:
        logic.admin(dict(request.cookies), _auth(request))
        if fmt not in ("csv", "jsonl"):
            raise Refused(404, "Export as grades.csv or grades.jsonl.")
        media = "text/csv" if fmt == "csv" else "application/x-ndjson"
        return PlainTextResponse(
            logic.export(fmt),
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="grades.{fmt}"'},
        )
