"""Another process that holds a run folder's write lock, for tests of a second writer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# Holds the lock until its stdin closes, then lets go as a finished run does.
HOLDER = """
import sys
from pathlib import Path
from potstill.runs import RunFolder
with RunFolder(Path(sys.argv[1])).writing():
    print("held", flush=True)
    sys.stdin.read()
"""


@contextmanager
def holding_run_lock(root: Path) -> Iterator[subprocess.Popen[str]]:
    """For the block, a process holds `root`'s write lock (it has taken it when this yields)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert holder.stdout.readline() == "held\n"
        yield holder
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
