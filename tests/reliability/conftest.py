"""The check that a bad input is refused cleanly.

Every bad input a test tries goes through `refused` (in-process, typer's CliRunner) or
`refused_by_subprocess` (the installed `potstill` command), which assert exit code 2, one
message naming the file, line or key, no traceback and nothing written, and count the input
in the session's `tally` (tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from potstill.cli import app

if TYPE_CHECKING:
    from conftest import Tally

# The teacher of every bad-input config names this variable, which is never set: should a bad
# input ever be accepted, the run stops at the key check with a message the test rejects,
# before any model is loaded or called.
UNSET_KEY = "POTSTILL_TEST_KEY_NEVER_SET"
POTSTILL = Path(sys.executable).with_name("potstill")


def _check_message(output: str, expect: Sequence[str], runs_dir: Path | None) -> str:
    """The output is one `error:` message holding every expected fragment; nothing written
    under `runs_dir` (None: a run folder that exists, which the caller checks itself)."""
    text = output.lstrip()
    assert text.startswith("error:"), f"not one clean message:\n{output[-3000:]}"
    assert sum(line.startswith("error:") for line in text.splitlines()) == 1, output[-3000:]
    for fragment in expect:
        assert fragment in text, f"{fragment!r} not in the message:\n{text[:3000]}"
    if runs_dir is None:
        return text
    written = sorted(str(p) for p in runs_dir.rglob("*")) if runs_dir.exists() else []
    assert written == [], f"a refused run left files behind: {written}"
    return text


Refused = Callable[..., str]


@pytest.fixture(scope="session")
def refused(tally: Tally) -> Refused:
    """Run `potstill ARGS` in-process; assert a clean refusal; return the message."""
    assert UNSET_KEY not in os.environ

    def check(args: Sequence[str], runs_dir: Path | None, expect: Sequence[str], kind: str) -> str:
        result = CliRunner().invoke(app, list(args))
        escaped = result.exception is not None and not isinstance(result.exception, SystemExit)
        tally.record(kind, escaped)
        if escaped and result.exc_info is not None:
            shown = "".join(traceback.format_exception(*result.exc_info))
            pytest.fail(f"a traceback instead of a message for {kind}:\n{shown[-4000:]}")
        assert result.exit_code == 2, result.output[-3000:]
        return _check_message(result.output, expect, runs_dir)

    return check


@pytest.fixture(scope="session")
def refused_by_subprocess(tally: Tally) -> Refused:
    """Run the installed `potstill ARGS` command; assert a clean refusal on stderr."""

    def check(args: Sequence[str], runs_dir: Path, expect: Sequence[str], kind: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != UNSET_KEY}
        done = subprocess.run(
            [str(POTSTILL), *args], capture_output=True, text=True, env=env, timeout=120
        )
        tally.record(kind, "Traceback (most recent call last)" in done.stderr + done.stdout)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr[-4000:]
        assert done.returncode == 2, done.stderr[-3000:]
        assert done.stdout == ""  # messages go to stderr; stdout stays clean for pipes
        return _check_message(done.stderr, expect, runs_dir)

    return check
