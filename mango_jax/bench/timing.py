"""Wall-clock timing that stays comparable on a shared, loaded machine.

Every candidate runs once per round, in turn (round-robin), so a burst of load from another
process slows all of them alike and their ratios stay meaningful. The summary is the median
over rounds after the warm-up rounds; the minimum and the spread are kept to show the noise.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed rounds. `dispatch` is the time until the call returned
    (before the result was ready): the Python and runtime overhead of launching one step."""

    seconds: tuple[float, ...]
    dispatch: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def as_dict(self) -> dict[str, float | int]:
        return {"median_ms": 1e3 * self.median, "min_ms": 1e3 * min(self.seconds),
                "max_ms": 1e3 * max(self.seconds), "rounds": len(self.seconds),
                "dispatch_median_ms": 1e3 * statistics.median(self.dispatch)}


def round_robin(calls: dict[str, Callable[[], object]], *, rounds: int,
                warmup: int) -> dict[str, Timing]:
    """Times each zero-argument call `rounds` times after `warmup` untimed rounds.

    A call returns its (possibly asynchronous) result; the clock stops when every array in it
    is ready.
    """
    if rounds < 1 or warmup < 0:
        raise ValueError(f"need rounds >= 1 and warmup >= 0, got {rounds} and {warmup}")
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    dispatch: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(warmup + rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            out = call()
            returned = time.perf_counter()
            jax.block_until_ready(out)
            done = time.perf_counter()
            if r >= warmup:
                seconds[name].append(done - start)
                dispatch[name].append(returned - start)
    return {name: Timing(tuple(seconds[name]), tuple(dispatch[name])) for name in calls}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
