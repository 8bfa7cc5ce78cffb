"""`fusekit optimize` of one model by two checkouts, interleaved: wall time and peak memory.

    python benchmarks/optimize_ab.py MODEL --a /path/to/old/venv/bin/python --b python [--rounds 5]

Each run is a fresh process (``python -m fusekit.cli optimize MODEL -o … --no-verify`` plus any
``--extra`` arguments), A and B alternating, so both see the same machine noise; the peak is the
child's own maximum resident set. Prints every run, then the median and range per side and
B's medians as ratios to A's, and the median of B/A paired within each round. Nothing is asserted: a refactor's "no slower, no more memory"
is read off the ratios and ranges.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(python: str, model: Path, out: Path, extra: list[str]) -> tuple[float, float]:
    """(seconds, peak GiB) of one optimize in a fresh process."""
    cmd = [python, "-m", "fusekit.cli", "optimize", str(model), "-o", str(out), "--no-verify", *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{python} failed on {model}: {proc.stderr.read().decode(errors='replace').strip()[-300:]}")
    return seconds, usage.ru_maxrss / 2**20  # KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--a", required=True, help="the Python whose fusekit is the baseline")
    parser.add_argument("--b", default=sys.executable, help="the Python whose fusekit is measured against it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more optimize arguments")
    args = parser.parse_args(argv)
    runs: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side, python in (("A", args.a), ("B", args.b)) if r % 2 == 0 else (("B", args.b), ("A", args.a)):
                seconds, gib = run_once(python, args.model.resolve(), Path(tmp) / f"{side}.onnx", args.extra)
                runs[side].append((seconds, gib))
                print(f"round {r + 1} {side}: {seconds:.2f} s, peak {gib:.2f} GiB", flush=True)
    medians = {}
    for side, values in runs.items():
        secs, gibs = [v[0] for v in values], [v[1] for v in values]
        medians[side] = statistics.median(secs), statistics.median(gibs)
        print(f"{side}: median {medians[side][0]:.2f} s ({min(secs):.2f}–{max(secs):.2f}), "
              f"peak {medians[side][1]:.2f} GiB ({min(gibs):.2f}–{max(gibs):.2f})")
    # each round's B against the A run beside it: a shared machine's load drifts slower than a round
    paired = sorted(b[0] / a[0] for a, b in zip(runs["A"], runs["B"]))
    print(f"B/A: time {medians['B'][0] / medians['A'][0]:.2f}× of the medians, "
          f"{statistics.median(paired):.2f}× paired per round ({paired[0]:.2f}–{paired[-1]:.2f}); "
          f"peak {medians['B'][1] / medians['A'][1]:.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
