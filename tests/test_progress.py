"""Progress without a terminal: plain lines at a steady pace, real rates, a last line."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from potstill.progress import Meter, Pace, call_meter, duration, progress_bar, rate_text


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=False, width=200), buffer


def test_calls_print_lines_at_the_pace_with_rate_eta_failures_and_cost() -> None:
    out, buffer = log_console()
    clock = FakeClock()
    with call_meter("synth teacher", 100, out=out, clock=clock, pace=Pace(10, 0.1)) as meter:
        for i in range(100):
            clock.now += 0.5  # 2 calls a second: 10% takes 5 s, so 10 s is the rarer pace
            meter.answered(ok=i % 10 != 0, usd=0.001)
    lines = buffer.getvalue().splitlines()
    assert lines[0] == "synth teacher: 100 to do"
    progress, last = lines[1:-1], lines[-1]
    assert [line.split(":")[1].split()[0] for line in progress] == [
        f"{n}/100" for n in (20, 40, 60, 80)
    ]
    assert progress[0] == "synth teacher: 20/100 (20%), 2.0/s, eta 40s, 2 failed, $0.0200"
    assert last == "synth teacher: 100/100 in 50s, 2.0/s, 10 failed, $0.1000"


def test_a_slow_loop_prints_every_tenth_not_every_ten_seconds() -> None:
    out, buffer = log_console()
    clock = FakeClock()
    with progress_bar("evaluate student", 20, out=out, clock=clock) as advance:
        for _ in range(20):
            clock.now += 30  # 30 s an item: 10 s passes at every item, 10% every second item
            advance(1)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 1 + 9 + 1  # first, one per 10% before the end, last
    assert lines[1] == "evaluate student: 2/20 (10%), 30.0s each, eta 9m00s"
    assert lines[-1] == "evaluate student: 20/20 in 10m00s, 30.0s each"


def test_answers_from_the_store_have_no_rate_and_do_not_inflate_it() -> None:
    out, buffer = log_console()
    clock = FakeClock()
    with call_meter("synth teacher", 50, cached=50, out=out, clock=clock):
        pass
    assert buffer.getvalue().splitlines() == [
        "synth teacher: 50 to do (50 already done)",
        "synth teacher: 50/50 in 0s, all cached, 0 failed, $0.0000",
    ]
    out, buffer = log_console()
    with call_meter("synth teacher", 50, cached=40, out=out, clock=clock) as meter:
        for _ in range(10):
            clock.now += 2.0
            meter.answered(ok=True, usd=0.0)
    last = buffer.getvalue().splitlines()[-1]
    assert last == "synth teacher: 50/50 in 20s (40 cached), 2.0s each, 0 failed, $0.0000"


def test_a_batch_that_lands_at_once_shows_no_absurd_rate() -> None:
    """A chunk of 16 answers arriving within microseconds is not 10^6 answers a second."""
    clock = FakeClock()
    meter = Meter("evaluate", 32, clock=clock)
    clock.now += 1e-5
    meter.done += 16
    assert meter.rate() is None and "/s" not in meter.line()
    clock.now += 4.0
    meter.done += 16
    rate = meter.rate()
    assert rate is not None and rate == pytest.approx(32 / 4.00001)


def test_the_last_line_comes_even_when_the_loop_fails() -> None:
    out, buffer = log_console()
    clock = FakeClock()
    with pytest.raises(RuntimeError), progress_bar("train", 10, out=out, clock=clock) as advance:
        clock.now += 3
        advance(3)
        raise RuntimeError("out of memory")
    assert buffer.getvalue().splitlines()[-1] == "train: stopped at 3/10 after 3s, 1.0/s"


def test_a_terminal_gets_a_live_bar_not_lines() -> None:
    buffer = io.StringIO()
    out = Console(file=buffer, force_terminal=True, width=120)
    with progress_bar("evaluate", 4, out=out) as advance:
        advance(4)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "4/4" in text and "to do" not in text


@pytest.mark.parametrize(("seconds", "text"), [(4.4, "4s"), (65, "1m05s"), (7620, "2h07m")])
def test_durations_read_short(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_rates_read_as_per_second_or_seconds_each() -> None:
    assert rate_text(3.25) == "3.2/s" and rate_text(0.25) == "4.0s each"


def test_a_chunk_recorded_at_once_is_reported_whole() -> None:
    """Eight answers of one chunk land at the same moment: the line counts all eight."""
    out, buffer = log_console()
    clock = FakeClock()
    with progress_bar("evaluate teacher", 16, out=out, clock=clock) as advance:
        for _ in range(2):
            clock.now += 20.0
            for _ in range(8):
                advance(1)
    assert buffer.getvalue().splitlines()[1:] == [
        "evaluate teacher: 8/16 (50%), 2.5s each, eta 20s",
        "evaluate teacher: 16/16 in 40s, 2.5s each",
    ]
