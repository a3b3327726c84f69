"""Load patterns: how many tasks are due by each second of a run.

Every pattern is a function ``due(t)``: the number of tasks that should have been sent
``t`` seconds after the start (a non-decreasing float), plus the run's ``duration``. The
sender keeps its count equal to ``floor(due(now))``: open-loop pacing, independent of how
fast tasks complete.

- ``burst``: ``count`` tasks at once.
- ``steady``: ``rate`` tasks/s for ``duration`` seconds.
- ``ramp``: linear from ``start_rate`` to ``rate`` tasks/s over ``duration`` seconds.
- ``oscillate``: ``rate`` ± ``amplitude`` tasks/s, a sine or square wave of ``period`` seconds.
- ``replay``: segments from a CSV of ``seconds,tasks_per_second`` rows: for ``seconds``
  seconds send ``tasks_per_second``, then the next row. A header line is allowed.

Arrivals are ``uniform`` (the pattern's exact pacing) or ``poisson`` (:func:`poisson`): random
times at the same rate, as independent producers send in production.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PATTERNS = ("burst", "steady", "ramp", "oscillate", "replay")
ARRIVALS = ("uniform", "poisson")


class PatternError(ValueError):
    """Pattern parameters or a replay CSV are invalid; the message is one line."""


@dataclass(frozen=True)
class Pattern:
    name: str
    duration: float  # seconds
    due: Callable[[float], float]  # tasks due t seconds after the start

    def total(self) -> int:
        """Tasks the whole run sends."""
        return int(math.floor(self.due(self.duration) + 1e-9))


def burst(count: int) -> Pattern:
    return Pattern("burst", 0.0, lambda t: float(count))


def steady(rate: float, duration: float) -> Pattern:
    return Pattern("steady", duration, lambda t: rate * min(t, duration))


def ramp(start_rate: float, rate: float, duration: float) -> Pattern:
    slope = (rate - start_rate) / duration

    def due(t: float) -> float:
        t = min(t, duration)
        return start_rate * t + slope * t * t / 2

    return Pattern("ramp", duration, due)


def oscillate(rate: float, amplitude: float, period: float, duration: float, wave: str = "sine") -> Pattern:
    if wave == "sine":
        def due(t: float) -> float:
            t = min(t, duration)
            return rate * t + amplitude * period / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / period))
    else:
        half = period / 2

        def due(t: float) -> float:
            t = min(t, duration)
            cycles, into = divmod(t, period)
            high = min(into, half)
            return cycles * rate * period + (rate + amplitude) * high + (rate - amplitude) * (into - high)

    return Pattern("oscillate", duration, due)


def read_replay(path: Path) -> list[tuple[float, float]]:
    """``(seconds, tasks_per_second)`` segments from a CSV file.

    Raises:
        PatternError: the file is missing, empty, or a row is not two non-negative numbers
            (its line number is named).
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PatternError(f"cannot read replay CSV {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PatternError(f"cannot read replay CSV {path}: not UTF-8 text") from None
    segments = []
    for number, row in enumerate(csv.reader(lines), start=1):
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            seconds, rate = (float(cell) for cell in row)
        except ValueError:
            if number == 1 and not segments:
                continue  # a header
            raise PatternError(f"{path}:{number}: expected 'seconds,tasks_per_second', got {','.join(row)!r}") from None
        if not (seconds > 0 and rate >= 0 and math.isfinite(seconds) and math.isfinite(rate)):
            raise PatternError(f"{path}:{number}: seconds must be > 0 and tasks_per_second >= 0")
        segments.append((seconds, rate))
    if not segments:
        raise PatternError(f"{path}: no 'seconds,tasks_per_second' rows")
    return segments


def replay(segments: list[tuple[float, float]]) -> Pattern:
    duration = sum(seconds for seconds, _ in segments)

    def due(t: float) -> float:
        sent, start = 0.0, 0.0
        for seconds, rate in segments:
            if t <= start + seconds:
                return sent + rate * max(0.0, t - start)
            sent, start = sent + rate * seconds, start + seconds
        return sent

    return Pattern("replay", duration, due)


def poisson(pattern: Pattern, seed: int) -> Pattern:
    """``pattern``'s load as Poisson arrivals: a non-homogeneous Poisson process whose rate at each
    moment is the pattern's (``due'(t)``), seeded, so one seed always gives the same send times.

    By time rescaling (Brown, Barbieri, Ventura, Kass and Frank, "The time-rescaling theorem and
    its application to neural spike train data analysis", Neural Computation 14, 2002) the k-th
    task is due when ``due(t)`` reaches ``E_k``, the sum of k unit exponential draws: gaps are
    exponential at the rate of that moment, and the count over the run is Poisson with mean
    ``due(duration)``.

    Raises:
        PatternError: the pattern has no duration (a burst is all at once).
    """
    if pattern.duration <= 0:
        raise PatternError(f"--arrivals poisson needs a pattern that lasts (not {pattern.name})")
    rng, marks = random.Random(seed), [0.0]

    def due(t: float) -> float:
        level = pattern.due(t)
        while marks[-1] <= level:
            marks.append(marks[-1] + rng.expovariate(1.0))
        return float(bisect.bisect_right(marks, level) - 1)

    return Pattern(pattern.name, pattern.duration, due)


def build(name: str, *, rate: float | None, duration: float, count: int | None, start_rate: float = 0.0,
          amplitude: float | None = None, period: float = 60.0, wave: str = "sine",
          csv_path: Path | None = None) -> Pattern:
    """The pattern ``name`` from CLI parameters (units: tasks/s and seconds).

    Raises:
        PatternError: an unknown pattern or an invalid parameter, in one line.
    """
    if name not in PATTERNS:
        raise PatternError(f"unknown pattern {name!r}; choose one of {', '.join(PATTERNS)}")
    if name == "burst":
        if not count or count <= 0:
            raise PatternError("burst needs --count > 0")
        return burst(count)
    if name == "replay":
        if csv_path is None:
            raise PatternError("replay needs --csv FILE")
        return replay(read_replay(csv_path))
    if rate is None or not rate > 0 or not math.isfinite(rate):
        raise PatternError(f"--rate must be a positive number of tasks/s, got {rate}")
    if not (duration > 0 and math.isfinite(duration)):
        raise PatternError(f"--duration must be positive seconds, got {duration}")
    if name == "steady":
        return steady(rate, duration)
    if name == "ramp":
        if start_rate < 0:
            raise PatternError(f"--start-rate must not be negative, got {start_rate}")
        return ramp(start_rate, rate, duration)
    amplitude = rate / 2 if amplitude is None else amplitude
    if not 0 <= amplitude <= rate:
        raise PatternError(f"--amplitude must be between 0 and --rate ({rate}), got {amplitude}")
    if not period > 0:
        raise PatternError(f"--period must be positive seconds, got {period}")
    if wave not in ("sine", "square"):
        raise PatternError(f"--wave must be sine or square, got {wave!r}")
    return oscillate(rate, amplitude, period, duration, wave)
