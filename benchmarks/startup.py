"""How long `fusekit` takes to start: each command's --help and an optimize of the shipped tiny model.

    python benchmarks/startup.py [--a OLD_PYTHON] [--b PYTHON] [--runs 7] [--pycache DIR] [--importtime CASE]

Every run is a fresh process (``python -m fusekit.cli …``, as the console script runs it), so a
case costs what a user waits for: the interpreter, the imports and the work. With ``--a``, the
checkout that Python imports is timed against ``--b``'s in alternating order, so both see the
same machine noise; each case runs once per side untimed first. With PYTHONDONTWRITEBYTECODE
set, a checkout that is not installed compiles its own modules in every run; ``--pycache DIR``
keeps their bytecode in DIR instead (PYTHONPYCACHEPREFIX), as an installed package has it.

Two reference rows time the interpreter alone and ``import onnx`` alone: any command that reads a
model pays the second. Prints the median and range per case and side, and B's median as a ratio
to A's, for the wall time and for the CPU time (user and system; on a shared machine it moves
less). ``--importtime CASE`` then prints where B's imports spend their time for that case
(``python -X importtime``): the slowest modules by their own time, and the total per top-level
package. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

TINY = Path(__file__).resolve().parent.parent / "testmodels" / "bert_tiny_opset14.onnx"
COMMANDS = ("optimize", "verify", "run", "bench", "inspect", "explain", "diff")


def cases(out: Path) -> dict[str, list[str]]:
    """Case name → the arguments after ``python``."""
    cli = ["-m", "fusekit.cli"]
    tiny = [*cli, "optimize", str(TINY), "-o", str(out)]
    return {"python -c pass (reference)": ["-c", "pass"],
            "import onnx (reference)": ["-c", "import onnx"],
            "fusekit --help": [*cli, "--help"],
            **{f"fusekit {c} --help": [*cli, c, "--help"] for c in COMMANDS},
            "fusekit optimize tiny": tiny,
            "fusekit optimize tiny --no-verify": [*tiny, "--no-verify"],
            "fusekit inspect tiny": [*cli, "inspect", str(TINY)]}


def run_once(python: str, args: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run; on a shared machine the CPU time varies less."""
    start = time.perf_counter()
    proc = subprocess.Popen([python, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=tempfile.gettempdir(), env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{python} {' '.join(args)} failed: {proc.stderr.read().decode(errors='replace').strip()[-300:]}")
    return seconds, usage.ru_utime + usage.ru_stime


def importtime(python: str, args: list[str], top: int, env: dict) -> str:
    """The ``top`` slowest imports by their own time, and each top-level package's total."""
    proc = subprocess.run([python, "-X", "importtime", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          cwd=tempfile.gettempdir(), text=True, env=env)
    rows = [(int(m[1]), int(m[2]), m[3].strip()) for m in
            re.finditer(r"^import time:\s+(\d+) \|\s+(\d+) \|(.*)$", proc.stderr, re.M)]
    packages = Counter()
    for own, _, name in rows:
        packages[name.partition(".")[0]] += own
    lines = [f"imports of {' '.join(args)}: {sum(r[0] for r in rows) / 1e3:.0f} ms in all "
             "(under -X importtime, which itself slows them)", "  slowest modules, own time:"]
    lines += [f"    {own / 1e3:8.1f} ms  {name}" for own, _, name in sorted(rows, reverse=True)[:top]]
    lines.append("  per top-level package:")
    lines += [f"    {own / 1e3:8.1f} ms  {name}" for name, own in packages.most_common(top)]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", help="the Python whose fusekit is the baseline (default: time --b alone)")
    parser.add_argument("--b", default=sys.executable, help="the Python whose fusekit is measured")
    parser.add_argument("--runs", type=int, default=7, help="runs per case and side (default 7)")
    parser.add_argument("--pycache", metavar="DIR", help="keep the bytecode of every module in DIR")
    parser.add_argument("--only", action="append", metavar="CASE", help="time only this case (repeatable)")
    parser.add_argument("--importtime", metavar="CASE", help="then show where B's imports spend their time in CASE")
    parser.add_argument("--top", type=int, default=12, help="rows of the --importtime lists (default 12)")
    args = parser.parse_args(argv)
    sides = {"A": args.a, "B": args.b} if args.a else {"B": args.b}
    env = dict(os.environ)
    if args.pycache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(Path(args.pycache).resolve())
    bytecode = ("kept in " + env["PYTHONPYCACHEPREFIX"] if args.pycache
                else "not written (PYTHONDONTWRITEBYTECODE)" if env.get("PYTHONDONTWRITEBYTECODE") else "as usual")
    with tempfile.TemporaryDirectory() as tmp:
        todo = cases(Path(tmp) / "tiny.fused.onnx")
        for name in [*(args.only or []), *([args.importtime] if args.importtime else [])]:
            if name not in todo:
                sys.exit(f"unknown case {name!r}; the cases: {', '.join(todo)}")
        timed = {name: todo[name] for name in (args.only or todo)}
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; bytecode {bytecode}; "
              + ", ".join(f"{side} = {python}" for side, python in sides.items()), flush=True)
        header = f"{'case':36}" + "".join(f"{side + ' wall: median (range) s':>30}{side + ' CPU s':>9}" for side in sides)
        print(header + (f"{'B/A wall':>10}{'B/A CPU':>9}" if args.a else ""))
        for name, case in timed.items():
            samples: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
            for python in sides.values():  # untimed: compiles what is compiled once, fills the file cache
                run_once(python, case, env)
            for r in range(args.runs):
                order = list(sides.items()) if r % 2 == 0 else list(sides.items())[::-1]
                for side, python in order:
                    samples[side].append(run_once(python, case, env))
            wall = {side: [w for w, _ in s] for side, s in samples.items()}
            cpu = {side: statistics.median(c for _, c in s) for side, s in samples.items()}
            row = f"{name:36}" + "".join(
                f"{f'{statistics.median(w):.2f} ({min(w):.2f}–{max(w):.2f})':>30}{cpu[side]:>9.2f}"
                for side, w in wall.items())
            if args.a:
                row += (f"{statistics.median(wall['B']) / statistics.median(wall['A']):>9.2f}×"
                        f"{cpu['B'] / cpu['A']:>8.2f}×")
            print(row, flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        if args.importtime:
            print(importtime(args.b, todo[args.importtime], args.top, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
