"""What reading and writing a model's file costs on its own: the floor under `fusekit optimize`.

    python benchmarks/file_io.py MODEL [--rounds 5]

Each round, in a fresh process: the file parsed as every command reads it (``wire.read_model``,
one weight at a time), then that model written back the way ``optimize`` writes its output
(``modelio.save``: staged beside the destination, then renamed into place) to a new file in a
temporary folder. Prints each round and the median and range of each. Subtracted from the time
``optimize`` prints (``benchmarks/optimize_ab.py`` reports it as "in command"), it leaves what the
checks, the passes and the export cost; ``optimize_ab.py --file-io`` subtracts it round by round.
Nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def once(model: Path) -> dict[str, float]:
    from fusekit.modelio import save
    from fusekit.wire import read_model

    start = time.perf_counter()
    with open(model, "rb") as f:
        loaded, _ = read_model(f, os.path.getsize(model))
    read = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        save(loaded, Path(tmp) / "written.onnx", external=False)
        written = time.perf_counter() - start
    return {"read": read, "write": written}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one round, in this process
    args = parser.parse_args(argv)
    if args.once:
        print(json.dumps(once(args.model.resolve())))
        return 0
    runs = []
    for r in range(args.rounds):
        out = subprocess.run([sys.executable, __file__, str(args.model), "--once"], check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out))
        print(f"round {r + 1}: read {runs[-1]['read']:.2f} s, write {runs[-1]['write']:.2f} s", flush=True)
    for key in ("read", "write"):
        values = [run[key] for run in runs]
        print(f"{key}: median {statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})")
    both = [run["read"] + run["write"] for run in runs]
    print(f"read + write: median {statistics.median(both):.2f} s ({min(both):.2f}–{max(both):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
