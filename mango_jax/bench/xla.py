"""What XLA says about a compiled program: FLOPs, memory, and how long it took to build.

FLOPs come from XLA's cost analysis (2 per multiply-add). XLA cannot see inside custom calls
(LAPACK's triangular solve on CPU, cuBLAS/cuSOLVER on GPU): each one adds -1 to its total.
`program_flops` removes those -1s and adds the analytic count of every triangular solve, the
only custom call our models emit, so that LICA's `W⁻¹` is not counted as free.
"""

from __future__ import annotations

import dataclasses
import re
import time

import numpy as np

# `%x = f32[2,8,64,64]{...} custom-call(...), custom_call_target="lapack_strsm_ffi", ...`
_TARGET = re.compile(r'custom_call_target="([^"]+)"')
_SHAPE = re.compile(r"=\s*[a-z]+\d*\[([\d,]*)\]")
_SIDE = re.compile(r"side\s*=\s*(\d+)")
_RIGHT_SIDE = ord("R")


@dataclasses.dataclass(frozen=True)
class CustomCalls:
    """Custom calls of an HLO module: how many, and the analytic FLOPs of the triangular
    solves among them (`unknown` counts the others, whose cost stays unaccounted)."""

    count: int
    solve_flops: float
    unknown: int


def custom_calls(hlo_text: str) -> CustomCalls:
    """Scans optimised HLO text for custom calls.

    A triangular solve with `a: [..., m, m]` on the left of `b: [..., m, k]` costs about
    m² k FLOPs (m(m+1)/2 multiply-adds per column); on the right of `b: [..., k, m]`, k m².
    """
    count, flops, unknown = 0, 0.0, 0
    for line in hlo_text.splitlines():
        target = _TARGET.search(line)
        if "custom-call(" not in line or target is None:
            continue
        count += 1
        shape = _SHAPE.search(line)
        name = target.group(1).lower()
        if shape is None or not ("trsm" in name or "triangular" in name):
            unknown += 1
            continue
        *batch, rows, cols = (int(d) for d in shape.group(1).split(",") if d)
        side = _SIDE.search(line)
        right = side is not None and int(side.group(1)) == _RIGHT_SIDE
        flops += float(np.prod(batch)) * (rows * cols * cols if right else rows * rows * cols)
    return CustomCalls(count, flops, unknown)


def program_flops(compiled) -> float | None:
    """FLOPs of one execution of a `jax.stages.Compiled` (None if XLA gives no estimate).

    `cost_analysis()` is a dict in jax 0.10 and a list of per-program dicts in some other
    versions; both are handled.
    """
    analysis = compiled.cost_analysis()
    if analysis is None:
        return None
    if isinstance(analysis, dict):
        analysis = [analysis]
    raw = sum(float(entry.get("flops", 0.0)) for entry in analysis)
    calls = custom_calls(compiled.as_text())
    return raw + calls.count + calls.solve_flops


@dataclasses.dataclass(frozen=True)
class Memory:
    """Bytes of XLA's static buffer assignment for one program.

    peak = argument + output − alias + temp: every buffer the program holds while it runs,
    with donated inputs that are reused as outputs (alias) counted once. On CPU this is the
    whole footprint of a step (no allocator caching or fragmentation is included).
    """

    argument: int
    output: int
    alias: int
    temp: int

    @property
    def peak(self) -> int:
        return self.argument + self.output - self.alias + self.temp

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "peak": self.peak}


def program_memory(compiled) -> Memory | None:
    stats = compiled.memory_analysis()
    if stats is None:
        return None
    return Memory(argument=int(stats.argument_size_in_bytes),
                  output=int(stats.output_size_in_bytes),
                  alias=int(stats.alias_size_in_bytes),
                  temp=int(stats.temp_size_in_bytes))


@dataclasses.dataclass(frozen=True)
class Program:
    """A compiled program with its build times (seconds), FLOPs and memory."""

    compiled: object
    lower_s: float
    compile_s: float
    flops: float | None
    memory: Memory | None


def build(jitted, *args, counted=None) -> Program:
    """Lowers and compiles `jitted(*args)` ahead of time; the result is what gets timed, so
    the jit cache never compiles the same program a second time. `counted`: the same
    computation with its loops unrolled (`flows.base.with_scans_unrolled`), compiled only to
    count the FLOPs, since XLA's cost analysis counts a loop's body once."""
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    flops = program_flops(compiled if counted is None else counted.lower(*args).compile())
    return Program(compiled, lowered_at - start, done - lowered_at, flops,
                   program_memory(compiled))
