"""What `potstill grade RUN` does: serve the app, add a grader, print or export the grades."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from potstill.files import atomic_write_text
from potstill.grade.app import create_app
from potstill.grade.pages import GradingApp, login_link
from potstill.grade.rounds import GradeError, GradingRound, open_round
from potstill.grade.summary import human_summary, render_section
from potstill.progress import console
from potstill.runs import RunFolder


def _open(run_dir: Path) -> tuple[RunFolder, GradingRound, int]:
    run = RunFolder(run_dir)
    config = run.load_config()
    grading = open_round(run, config)
    for note in grading.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    return run, grading, config.evaluate.bootstrap_samples


def base_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def add_grader(run_dir: Path, name: str, host: str, port: int) -> str:
    """Add a grader (or replace a lost link) and return their personal link, which alone
    goes to stdout (`LINK=$(potstill grade RUN --add-grader ann)`)."""
    _, grading, _ = _open(run_dir)
    token, created = grading.add_grader(name)
    verb = "added" if created else "has a new link (the old one no longer works)"
    console.print(f"grader {name} {verb}; personal link:", markup=False, highlight=False)
    link = login_link(base_url(host, port), token)
    print(link)
    return link


def summary(run_dir: Path) -> str:
    """The human figures as Markdown, with each grader's progress."""
    run, grading, samples = _open(run_dir)
    lines = [f"{len(grading.store.sample())} examples sampled for grading."]
    for p in grading.store.progress():
        lines.append(f"- {p['grader']}: {p['done']} / {p['total']} graded")
    figures = human_summary(run, samples, grading.config.seed)
    lines.append("")
    if figures is None:
        lines.append("No grades yet.")
    else:
        lines.append(render_section(figures, "md"))
        lines.append(f"`potstill report {run.root}` puts these figures into the report.")
    return "\n".join(lines)


def export(run_dir: Path, path: Path) -> int:
    """Write every grade to CSV or JSONL (by the file's suffix); returns the count."""
    _, grading, samples = _open(run_dir)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in ("csv", "jsonl"):
        raise GradeError(f"{path}: export to a .csv or .jsonl file")
    atomic_write_text(path, GradingApp(grading, samples).export(fmt))
    return len(grading.store.grades())


def listen(host: str, port: int) -> socket.socket:
    """A socket bound and listening on host:port, or a GradeError that says why not."""
    url = base_url(host, port)
    sock: socket.socket | None = None
    try:
        # Bound as uvicorn binds its own: a port left in TIME_WAIT by a stopped server is
        # free again, but one that another server listens on is not.
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except (OSError, OverflowError) as exc:  # OverflowError: a port past 65535
        if sock is not None:
            sock.close()
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise GradeError(
                f"cannot listen on {url}: another server (this run's own `potstill grade`, "
                "perhaps) listens there. Nothing was changed, so its admin link still works; "
                "pick another --port to start a second one."
            ) from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise GradeError(f"cannot listen on {url}: {reason}") from None
    return sock


def serve(run_dir: Path, host: str, port: int) -> None:
    """Serve the grading app; prints a fresh admin link (the previous one stops working).
    The port is bound before anything changes, so a start that fails (the port is taken,
    by this run's own server perhaps) leaves the admin link of a running server working."""
    import uvicorn

    _, grading, samples = _open(run_dir)
    sock = listen(host, port)
    try:
        admin = grading.store.new_admin_token()
        graders = grading.store.progress()
        console.print(
            f"grading {len(grading.store.sample())} examples; {len(graders)} graders. Add one "
            f"with `potstill grade {run_dir} --add-grader NAME`.",
            markup=False,
            highlight=False,
        )
        console.print("admin link (new at every start):", markup=False, highlight=False)
        print(login_link(base_url(host, port), admin), flush=True)
        # No access log: personal links carry their token in the query string.
        config = uvicorn.Config(
            create_app(grading, samples), host=host, port=port, access_log=False
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
