"""`fusekit optimize` of one model by two checkouts, interleaved: wall time and peak memory.

    python benchmarks/optimize_ab.py MODEL --a /path/to/old/venv/bin/python --b python [--rounds 5]

Each run is a fresh process (``python -m fusekit.cli optimize MODEL -o … --no-verify`` plus any
``--extra`` arguments), A and B alternating, so both see the same machine noise; the peak is the
child's own maximum resident set, and "in command" the time the command prints (load → optimize →
save: the process less its start-up). Prints every run, then the median and range per side and
B's medians as ratios to A's, with the median of B/A paired within each round. ``--file-io`` also reads and writes the file alone each round
(``benchmarks/file_io.py``, with B's Python) and reports what B's command time leaves once that
is subtracted, round by round, under the same noise. Nothing is asserted: a refactor's "no slower, no more memory"
is read off the ratios and ranges.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(python: str, model: Path, out: Path, extra: list[str]) -> tuple[float, float, float]:
    """(seconds, peak GiB, seconds the command prints) of one optimize in a fresh process."""
    cmd = [python, "-m", "fusekit.cli", "optimize", str(model), "-o", str(out), "--no-verify", *extra]
    out.unlink(missing_ok=True)  # a new file each run, as benchmarks/file_io.py writes: no old one to free
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, cwd=tempfile.gettempdir())
        printed = proc.stdout.read().decode(errors="replace")  # the summary: read to the end, then reaped
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            sys.exit(f"{python} failed on {model}: {errors.read().decode(errors='replace').strip()[-300:]}")
    proc.stdout.close()
    own = re.search(r"^time: ([0-9.]+) s", printed, re.MULTILINE)
    return seconds, usage.ru_maxrss / 2**20, float(own.group(1)) if own else float("nan")  # KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--a", required=True, help="the Python whose fusekit is the baseline")
    parser.add_argument("--b", default=sys.executable, help="the Python whose fusekit is measured against it")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--file-io", action="store_true", help="also time the file's own read and write each round")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more optimize arguments")
    args = parser.parse_args(argv)
    runs: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
    left = []  # B's command time less the file's read and write, per round
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for side, python in (("A", args.a), ("B", args.b)) if r % 2 == 0 else (("B", args.b), ("A", args.a)):
                seconds, gib, own = run_once(python, args.model.resolve(), Path(tmp) / f"{side}.onnx", args.extra)
                runs[side].append((seconds, gib, own))
                print(f"round {r + 1} {side}: {seconds:.2f} s, peak {gib:.2f} GiB, in command {own:.2f} s", flush=True)
            if args.file_io:
                io = json.loads(subprocess.run([args.b, str(Path(__file__).with_name("file_io.py")), str(args.model),
                                                "--once"], check=True, capture_output=True, text=True).stdout)
                left.append((io["read"] + io["write"], runs["B"][-1][2] - io["read"] - io["write"]))
                print(f"round {r + 1} file: read {io['read']:.2f} s, write {io['write']:.2f} s; "
                      f"B's command less both {left[-1][1]:.2f} s", flush=True)
    medians = {}
    for side, values in runs.items():
        secs, gibs, owns = ([v[i] for v in values] for i in range(3))
        medians[side] = statistics.median(secs), statistics.median(gibs), statistics.median(owns)
        print(f"{side}: median {medians[side][0]:.2f} s ({min(secs):.2f}–{max(secs):.2f}), "
              f"peak {medians[side][1]:.2f} GiB ({min(gibs):.2f}–{max(gibs):.2f}), "
              f"in command {medians[side][2]:.2f} s ({min(owns):.2f}–{max(owns):.2f})")
    # each round's B against the A run beside it: a shared machine's load drifts slower than a round
    paired = sorted(b[0] / a[0] for a, b in zip(runs["A"], runs["B"]))
    print(f"B/A: time {medians['B'][0] / medians['A'][0]:.2f}× of the medians, "
          f"{statistics.median(paired):.2f}× paired per round ({paired[0]:.2f}–{paired[-1]:.2f}); "
          f"peak {medians['B'][1] / medians['A'][1]:.2f}×, in command {medians['B'][2] / medians['A'][2]:.2f}×")
    if left:
        io, rest = [v[0] for v in left], [v[1] for v in left]
        print(f"file read + write: median {statistics.median(io):.2f} s ({min(io):.2f}–{max(io):.2f}); "
              f"B's command less it: median {statistics.median(rest):.2f} s ({min(rest):.2f}–{max(rest):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
