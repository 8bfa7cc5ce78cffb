"""Digests of every committed model fused for every target: a refactor's proof that output did not move.

    python benchmarks/fused_digest.py > before.tsv      # on the old checkout
    python benchmarks/fused_digest.py > after.tsv       # on the new one
    diff before.tsv after.tsv

Each line is ``model  target  bytes-digest  renamed-digest  summary``. The bytes digest is the
fused file as written. The renamed digest is the same model with every node name blanked and
the provenance (keyed by node names) dropped, so a change that only renames nodes shows in the
first digest alone. ``--pack`` adds the packed forms. ``--keep DIR`` writes each fused model there.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys

import onnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDERS = ["testmodels", "testmodels/corpus", "testmodels/exporters", "testmodels/int8"]


def _renamed(model: onnx.ModelProto) -> bytes:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for node in model.graph.node:
        node.name = ""
    keep = [p for p in model.metadata_props if p.key != "fusekit.provenance"]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    return model.SerializeToString()


def main(argv=None) -> int:
    from fusekit import optimize
    from fusekit.errors import FusekitError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", action="store_true", help="also digest the packed forms")
    parser.add_argument("--keep", type=pathlib.Path, help="write each fused model into this folder")
    args = parser.parse_args(argv)
    models = sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("*.onnx") if ".fused" not in p.name)
    for path in models:
        for target in ("ort", "onnx", "openvino"):
            for pack in (False, True) if args.pack else (False,):
                key = f"{path.relative_to(ROOT)}\t{target}{'+pack' if pack else ''}"
                try:
                    fused, report = optimize(str(path), target=target, verify=False, pack=pack)
                except FusekitError as e:
                    print(f"{key}\trefused\t{str(e).splitlines()[0]}", flush=True)
                    continue
                data = fused.SerializeToString()
                counts = ",".join(f"{k}={v}" for k, v in sorted((report.counts + report.canonical).items()))
                print(f"{key}\t{hashlib.sha256(data).hexdigest()[:16]}\t"
                      f"{hashlib.sha256(_renamed(fused)).hexdigest()[:16]}\t{counts}", flush=True)
                if args.keep:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    out = args.keep / f"{path.stem}.{target}{'.pack' if pack else ''}.onnx"
                    out.write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
