"""What a person sees while a long loop runs: a live bar in a terminal; without one (CI, a
pipe, nohup) a plain line at a steady pace and a last line, so a log is never silent.

Rates are work done over the wall time since the loop began (not a window over the last few
updates, which turns a batch that lands at once into "268858.1/s"); answers read back from
the store are counted as cached and take no part in the rate or the ETA.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True)

if not console.is_terminal:
    # The libraries' own tqdm bars ("Loading weights", "Filter") write carriage returns that a
    # log shows as one garbled line; without a terminal only potstill's lines are printed.
    # Set before transformers and datasets are imported (they read it once); a user's own
    # setting wins.
    for _variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        os.environ.setdefault(_variable, "1")

Clock = Callable[[], float]
MIN_RATE_S = 1.0  # under a second of work, a rate is noise rather than a measurement


@dataclass(frozen=True)
class Pace:
    """Without a terminal, a line once both have passed since the last one: a fast loop
    prints every `seconds`, a slow one every `fraction` of its total."""

    seconds: float = 10.0
    fraction: float = 0.1


PACE = Pace()


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h07m`: short enough for a progress line."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def rate_text(rate: float) -> str:
    """Items per second, or seconds per item when each takes longer than a second."""
    if rate >= 1:
        return f"{rate:.1f}/s"
    return f"{1 / rate:.1f}s each"


@dataclass
class Meter:
    """A loop's count: `done` of `total`, of which `cached` came from the store without work;
    for model calls (`calls`) also the failures and the cost so far."""

    label: str
    total: int
    cached: int = 0
    calls: bool = False
    clock: Clock = time.monotonic
    done: int = 0
    failed: int = 0
    usd: float = 0.0
    note: str = ""  # what else the loop reports, such as the last loss
    started: float = field(init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()
        self.done = max(self.done, self.cached)

    def elapsed(self) -> float:
        return self.clock() - self.started

    def rate(self) -> float | None:
        """Work done per second of wall time; None before there is a second of it."""
        worked, elapsed = self.done - self.cached, self.elapsed()
        if worked <= 0 or elapsed < MIN_RATE_S:
            return None
        return worked / elapsed

    def status(self, final: bool = False) -> str:
        """Rate, ETA (while running), failures and cost, joined for one line."""
        parts = []
        rate = self.rate()
        if rate is not None:
            parts.append(rate_text(rate))
            if not final and self.done < self.total:
                parts.append(f"eta {duration((self.total - self.done) / rate)}")
        elif self.done == self.cached and self.cached:
            parts.append("all cached" if self.done >= self.total else "cached so far")
        if self.calls:
            parts.append(f"{self.failed} failed")
            parts.append(f"${self.usd:.4f}")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)

    def line(self, final: bool = False) -> str:
        """`label: 20/100 (20%), 2.0/s, eta 40s`; at the end `label: 100/100 in 50s, ...`."""
        count = f"{self.done}/{self.total}"
        if not final:
            count += f" ({100 * self.done // max(1, self.total)}%)"
        elif self.done >= self.total:
            count += f" in {duration(self.elapsed())}"
        else:
            count = f"stopped at {count} after {duration(self.elapsed())}"
        if self.cached and self.done > self.cached:
            count += f" ({self.cached} cached)"
        status = self.status(final)
        return f"{self.label}: {count}" + (f", {status}" if status else "")


class _Lines:
    """The meter as plain lines: a first, one at the pace, and a last."""

    def __init__(self, meter: Meter, out: Console, pace: Pace) -> None:
        self.meter, self.out, self.pace = meter, out, pace
        self.last_at, self.last_done = meter.started, meter.done
        self.pending: str | None = None
        self.pending_at = meter.started
        cached = f" ({meter.cached} already done)" if meter.cached else ""
        self._print(f"{meter.label}: {meter.total} to do{cached}")

    def _print(self, text: str) -> None:
        self.out.print(text, markup=False, highlight=False, soft_wrap=True)

    def update(self) -> None:
        """A line once the pace is reached, printed when the burst of updates that reached it
        (a chunk of answers recorded one by one at once) is over, so it counts all of them."""
        meter, now = self.meter, self.meter.clock()
        if self.pending is not None and now > self.pending_at:
            self._print(self.pending)
            self.pending = None
        if meter.done >= meter.total:
            self.pending = None  # the last line says it
        elif self.pending is not None or self._due(now):
            self.last_at, self.last_done = now, meter.done
            self.pending, self.pending_at = meter.line(), now

    def _due(self, now: float) -> bool:
        meter = self.meter
        waited = now - self.last_at >= self.pace.seconds
        return waited and meter.done - self.last_done >= self.pace.fraction * meter.total

    def close(self) -> None:
        self._print(self.meter.line(final=True))


class _Bar:
    """The meter as a live rich bar in a terminal."""

    def __init__(self, meter: Meter, out: Console) -> None:
        self.meter = meter
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=out,
            transient=False,
        )
        self.bar.start()
        self.task_id: TaskID = self.bar.add_task(
            meter.label, total=meter.total, completed=meter.done, status=meter.status()
        )

    def update(self) -> None:
        self.bar.update(self.task_id, completed=self.meter.done, status=self.meter.status())

    def close(self) -> None:
        self.bar.update(self.task_id, completed=self.meter.done, status=self.meter.status(True))
        self.bar.stop()


@contextmanager
def metered(
    meter: Meter, out: Console | None = None, pace: Pace = PACE
) -> Iterator[Callable[[], None]]:
    """Shows `meter` while the block runs; yields `refresh()`, to call after each change.
    The last line (or the bar's last state) is shown even if the block raises."""
    out = out or console
    view: _Lines | _Bar = _Bar(meter, out) if out.is_terminal else _Lines(meter, out, pace)
    try:
        yield view.update
    finally:
        view.close()


@contextmanager
def progress_bar(
    label: str,
    total: int,
    *,
    cached: int = 0,
    out: Console | None = None,
    pace: Pace = PACE,
    clock: Clock = time.monotonic,
) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)` for a loop of `total` items (`cached` of them already done)."""
    meter = Meter(label, total, cached=cached, clock=clock)
    with metered(meter, out, pace) as refresh:

        def advance(n: int) -> None:
            meter.done += n
            refresh()

        yield advance


@dataclass
class CallMeter:
    """Counts model calls: answered, failed, and what they cost so far."""

    meter: Meter
    refresh: Callable[[], None]

    def answered(self, ok: bool, usd: float) -> None:
        self.meter.done += 1
        self.meter.failed += not ok
        self.meter.usd += usd
        self.refresh()


@contextmanager
def call_meter(
    label: str,
    total: int,
    *,
    cached: int = 0,
    out: Console | None = None,
    pace: Pace = PACE,
    clock: Clock = time.monotonic,
) -> Iterator[CallMeter]:
    """A meter for `total` calls, `cached` of them answered from the store: count, rate, ETA,
    failures and cost."""
    meter = Meter(label, total, cached=cached, calls=True, clock=clock)
    with metered(meter, out, pace) as refresh:
        yield CallMeter(meter, refresh)


def say(text: str) -> None:
    """One message on the console: plain text, never read as markup, never wrapped (a path
    broken across lines cannot be copied)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)
