"""Progress bars for long loops (rich): live in a terminal, a final line in a log."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True)


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`; the bar shows count, elapsed time and ETA."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as bar:
        task_id = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task_id, n)


class _RateColumn(ProgressColumn):
    """Calls per second over rich's recent window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- /s" if speed is None else f"{speed:.1f}/s")


@dataclass
class CallMeter:
    """Counts model calls on a bar: answered, failed, and what they cost so far."""

    bar: Progress
    task_id: TaskID
    failed: int = 0
    usd: float = 0.0

    def answered(self, ok: bool, usd: float) -> None:
        self.failed += not ok
        self.usd += usd
        self.bar.update(self.task_id, advance=1, failed=self.failed, usd=self.usd)


@contextmanager
def call_meter(label: str, total: int) -> Iterator[CallMeter]:
    """A bar for `total` calls to send: count, rate, elapsed, ETA, failures and cost."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("failed {task.fields[failed]} ${task.fields[usd]:.4f}"),
        console=console,
        transient=False,
    ) as bar:
        task_id = bar.add_task(label, total=total, failed=0, usd=0.0)
        yield CallMeter(bar, task_id)
