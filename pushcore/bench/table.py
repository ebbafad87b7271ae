"""Time every compared format and print the codec comparison table.

This is what ``pushcore bench`` and ``python benchmarks/codec_table.py``
run. Each encode and decode expression of :mod:`pushcore.bench.comparison` is
timed with :mod:`timeit` (garbage collector off, as timeit does): the
number of loops is calibrated to ``--min-time`` seconds, that is repeated
``--repeat`` times — interleaved across all formats — and the minimum is
reported, since on a shared machine noise only ever adds time. Compare
ratios within one run, not absolute numbers across runs.

It is a benchmark, not a test: a missed target prints MISS and the exit
status stays 0.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import timeit
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .comparison import BENCH_EXTRA_HINT, OPERATIONS, Case, build_cases
from .options import add_arguments

__all__ = [
    "Result", "Target", "time_expr", "measure", "evaluate_targets", "format_table",
    "machine_info", "add_arguments", "run", "main",
]

# The codec budget of the design: a push through the Cython codec must encode
# and decode >= 100x faster than slixmpp, faster than msgpack, in <= 35 % of
# the XMPP stanza's bytes.
TARGET_SPEEDUP_OVER_XMPP = 100.0
TARGET_BYTES_PERCENT_OF_XMPP = 35.0
TARGET_ENCODER = "pushcore-cython"


@dataclass
class Result:
    """One case measured: ns per encode / decode (``None`` for bytes-only cases)."""

    case: Case
    encode_ns: float | None
    decode_ns: float | None

    @property
    def size(self) -> int:
        return len(self.case.frame)


@dataclass
class Target:
    """One budget line: what was required, what was measured, whether it held."""

    name: str
    measured: str
    passed: bool | None  # None: could not be evaluated (a competitor is missing)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


class _Timing:
    """One expression's timeit loop, calibrated to run for about *min_time* seconds."""

    def __init__(self, expr: str, namespace: dict[str, Any], min_time: float) -> None:
        # The names of *namespace* become local variables of the timing loop, so a
        # name costs the same fast local lookup in every format's expression.
        setup = "\n".join(f"{name} = __namespace__[{name!r}]" for name in namespace
                          if name.isidentifier())
        self._timer = timeit.Timer(expr, setup=setup, globals={"__namespace__": namespace})
        number = 1
        while True:  # grow the loop count until one run takes a fifth of min_time
            elapsed = self._timer.timeit(number)
            if elapsed >= min_time / 5 or number >= 10**8:
                break
            number *= 2 if elapsed > min_time / 50 else 10
        self.number = max(1, int(number * min_time / max(elapsed, 1e-9)))
        self.best_ns = float("inf")

    def run(self) -> None:
        """One timed run; keeps the best (lowest) ns per evaluation seen so far."""
        self.best_ns = min(self.best_ns, self._timer.timeit(self.number) / self.number * 1e9)


def time_expr(expr: str, namespace: dict[str, Any], min_time: float, repeat: int) -> float:
    """Nanoseconds per evaluation of *expr*: the minimum over *repeat* runs of ~*min_time* s.

    Names in *expr* are looked up in *namespace*.
    """
    timing = _Timing(expr, namespace, min_time)
    for _ in range(repeat):
        timing.run()
    return timing.best_ns


def measure(cases: Sequence[Case], min_time: float = 0.1, repeat: int = 10) -> list[Result]:
    """Time the encode and decode of every timed case.

    The runs are interleaved — round 1 of every expression, then round 2, … —
    so that a burst of load from other processes on a shared machine falls on
    all formats alike instead of on whichever was being timed at that moment;
    each expression keeps its best run.
    """
    timings: dict[int, tuple[_Timing, _Timing]] = {}
    for i, case in enumerate(cases):
        if case.timed:
            assert case.encode_expr is not None and case.decode_expr is not None  # a timed case has both
            timings[i] = (_Timing(case.encode_expr, case.namespace, min_time),
                          _Timing(case.decode_expr, case.namespace, min_time))
    for _ in range(repeat):
        for enc, dec in timings.values():
            enc.run()
            dec.run()
    results = []
    for i, case in enumerate(cases):
        if i in timings:
            enc, dec = timings[i]
            results.append(Result(case, enc.best_ns, dec.best_ns))
        else:
            results.append(Result(case, None, None))
    return results


def _baselines(results: Sequence[Result]) -> dict[str, Result]:
    return {r.case.operation: r for r in results if r.case.baseline}


def _find(results: Sequence[Result], operation: str, encoder: str) -> Result | None:
    for r in results:
        if r.case.operation == operation and r.case.encoder == encoder:
            return r
    return None


def evaluate_targets(results: Sequence[Result]) -> list[Target]:
    """The push budget, checked on the Cython codec's push row."""
    ours = _find(results, "push", TARGET_ENCODER)
    xmpp = _baselines(results).get("push")
    msgpack = _find(results, "push", "msgpack")
    targets = []
    for step in ("encode", "decode"):
        name = f"{step} >= {TARGET_SPEEDUP_OVER_XMPP:.0f}x faster than slixmpp"
        if ours and xmpp:
            ratio = getattr(xmpp, f"{step}_ns") / getattr(ours, f"{step}_ns")
            targets.append(Target(name, f"{ratio:.0f}x", ratio >= TARGET_SPEEDUP_OVER_XMPP))
        else:
            targets.append(Target(name, "not measured", None))
    for step in ("encode", "decode"):
        name = f"{step} faster than msgpack"
        if ours and msgpack:
            theirs, mine = getattr(msgpack, f"{step}_ns"), getattr(ours, f"{step}_ns")
            targets.append(Target(name, f"{mine:.0f} ns vs {theirs:.0f} ns ({theirs / mine:.2f}x)",
                                  mine < theirs))
        else:
            targets.append(Target(name, "not measured", None))
    name = f"bytes <= {TARGET_BYTES_PERCENT_OF_XMPP:.0f}% of the XMPP stanza"
    if ours and xmpp:
        pct = 100.0 * ours.size / xmpp.size
        targets.append(Target(name, f"{ours.size} B / {xmpp.size} B = {pct:.1f}%",
                              pct <= TARGET_BYTES_PERCENT_OF_XMPP))
    else:
        targets.append(Target(name, "not measured", None))
    return targets


def _ns(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _times(baseline: float | None, value: float | None) -> str:
    if baseline is None or value is None:
        return "-"
    ratio = baseline / value
    return f"{ratio:,.0f}x" if ratio >= 10 else f"{ratio:.2f}x"


def format_table(results: Sequence[Result], targets: Sequence[Target] = ()) -> str:
    """The results as a Markdown table (readable in a terminal too)."""
    baselines = _baselines(results)
    verdict = "n/a"
    if targets:
        passed = [t.passed for t in targets]
        if False in passed:
            verdict = "MISS: " + "; ".join(t.name for t in targets if t.passed is False)
        elif None in passed:
            verdict = "n/a (competitor missing)"
        else:
            verdict = "PASS"
    header = ("operation", "encoder", "carries", "encode ns/op", "decode ns/op", "bytes",
              "encode vs XMPP", "decode vs XMPP", "bytes % of XMPP", "targets")
    rows = [header]
    for r in results:
        base = baselines.get(r.case.operation)
        rows.append((
            r.case.operation,
            r.case.encoder,
            r.case.carries,
            _ns(r.encode_ns),
            _ns(r.decode_ns),
            str(r.size),
            _times(base.encode_ns if base else None, r.encode_ns),
            _times(base.decode_ns if base else None, r.decode_ns),
            f"{100.0 * r.size / base.size:.1f}%" if base else "-",
            verdict if (r.case.operation, r.case.encoder) == ("push", TARGET_ENCODER) else "",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    numeric = {3, 4, 5, 6, 7, 8}
    lines = []
    for k, row in enumerate(rows):
        cells = [cell.rjust(w) if i in numeric and k else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("| " + " | ".join(cells) + " |")
        if k == 0:
            lines.append("|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2)
                                        for i, w in enumerate(widths)) + "|")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on."""
    try:
        import Cython

        cython_version = Cython.__version__  # type: ignore[attr-defined]  # re-exported implicitly (from .Shadow import __version__)
    except ImportError:
        cython_version = "not installed"
    from ..codec import BACKEND

    return {
        "cpu": _cpu_model(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "cython": cython_version,
        "backend": BACKEND,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Build, check, time and print. Returns the exit status (0 even on MISS)."""
    repeat, min_time = (3, 0.02) if args.quick else (args.repeat, args.min_time)
    if repeat < 1 or min_time <= 0:
        print("pushcore bench: --repeat must be >= 1 and --min-time > 0", file=sys.stderr)
        return 2
    operations = tuple(args.operation) if args.operation else OPERATIONS
    cases, missing = build_cases(operations=operations)
    info = machine_info()
    print("pushcore codec comparison: the same notification in every format", file=out)
    print(f"machine: {info['cpu']}, {info['cores']} cores; Python {info['python']}, "
          f"Cython {info['cython']}; {info['date']}", file=out)
    print(f"timing: min of {repeat} interleaved runs of ~{min_time:g} s each (timeit, GC off); "
          f"shared machines are noisy: compare ratios within one run", file=out)
    if missing:
        print("\nleft out:", file=out)
        for why in missing:
            print(f"  - {why}", file=out)
    print(file=out)
    results = measure(cases, min_time=min_time, repeat=repeat)
    targets = evaluate_targets(results) if "push" in operations else []
    print(format_table(results, targets), file=out)
    notes = [(r.case.operation, r.case.encoder, r.case.note) for r in results if r.case.note]
    if notes:
        print("\nnotes:", file=out)
        for op, enc, note in notes:
            print(f"  - {op}/{enc}: {note}", file=out)
    if targets:
        print("\ntargets (push, pushcore-cython):", file=out)
        for t in targets:
            print(f"  {t.verdict:4}  {t.name}: {t.measured}", file=out)
        if any(t.passed is None for t in targets):
            print(f"\nTo compare with XMPP and msgpack, install them: {BENCH_EXTRA_HINT}", file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="codec_table",
        description="Time pushcore's codec against XMPP (slixmpp), MQTT 3.1.1, msgpack "
                    "and JSON on the same notification, and print the table.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
