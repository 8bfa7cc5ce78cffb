"""Loading and saving models safely: clear one-line errors, atomic writes, external data.

Writes go to a temporary folder beside the destination and are renamed into place
only when complete, so a failure never leaves a half-written model and never touches
the input.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from .errors import FusekitError
from .wire import read_model, write_model

MIN_OPSET = 11
TWO_GB = 2**31


def max_opset() -> int:
    return onnx.defs.onnx_opset_version()


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def uses_external_data(model: onnx.ModelProto) -> bool:
    tensors = onnx.external_data_helper._get_all_tensors(model)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)


def load(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and validate a model; every problem becomes a FusekitError naming it."""
    return load_with_layout(path)[0]


def load_with_layout(path: str | os.PathLike) -> tuple[onnx.ModelProto, bool]:
    """Like :func:`load`, also telling whether the weights were stored as external data."""
    p = Path(path)
    if not p.exists():
        raise FusekitError(f"{p}: no such file")
    if p.is_dir():
        raise FusekitError(f"{p}: is a directory, not an ONNX model file")
    if p.stat().st_size == 0:
        raise FusekitError(f"{p}: file is empty")
    try:
        with open(p, "rb") as f:
            model = read_model(f, p.stat().st_size)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise FusekitError(f"{p}: not a readable ONNX model (the file is truncated or not ONNX: {_first_line(e)})") from None
    except OSError as e:
        raise FusekitError(f"{p}: cannot read: {e.strerror or e}") from None
    if not model.HasField("graph") or not model.graph.node:
        raise FusekitError(f"{p}: not an ONNX model (no graph nodes; the file is truncated or not ONNX)")
    if model.ir_version > onnx.IR_VERSION:
        raise FusekitError(f"{p}: IR version {model.ir_version} is newer than this onnx {onnx.__version__} reads "
                           f"(up to {onnx.IR_VERSION}); upgrade onnx")
    opset = default_opset(model)
    if opset > max_opset():
        raise FusekitError(f"{p}: opset {opset} is newer than this onnx {onnx.__version__} supports "
                           f"(up to {max_opset()}); upgrade onnx")
    if opset < MIN_OPSET:
        raise FusekitError(f"{p}: opset {opset} is not supported (fusekit needs opset {MIN_OPSET} or newer)")
    external = uses_external_data(model)
    if external:
        try:
            onnx.load_external_data_for_model(model, str(p.parent))
        except (OSError, ValueError) as e:
            raise FusekitError(f"{p}: cannot read its external data: {_first_line(e)}") from None
    check(model, str(p), str(p))
    return model, external


HEAVY = 1024  # elements: initializers above this travel outside skeletons


def is_heavy(tensor: onnx.TensorProto) -> bool:
    return int(np.prod(tensor.dims, dtype=np.int64)) > HEAVY


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its weights: large initializers become graph inputs of the same type.

    The checker, shape inference and the opset converter serialize whatever they are
    given; handing them the skeleton instead of a 400 MB model saves seconds and
    gigabytes, and none of them needs the weights' values.
    """
    skel = onnx.ModelProto()
    for field_name in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        setattr(skel, field_name, getattr(model, field_name))
    skel.opset_import.extend(model.opset_import)
    skel.functions.extend(model.functions)
    g, src = skel.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    declared = {i.name for i in src.input}
    for t in src.initializer:
        if not is_heavy(t):
            g.initializer.append(t)
        elif t.name not in declared:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return skel


def check(model: onnx.ModelProto, what: str, path: str | None = None):
    """onnx.checker on the model's skeleton, as a one-line error."""
    try:
        onnx.checker.check_model(skeleton(model))
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError) as e:
        raise FusekitError(f"{what}: invalid ONNX model: {_first_line(e)}") from None


def write(model: onnx.ModelProto, path: Path, external: bool):
    """Write ``model`` to ``path``; with ``external`` its weights go to ``<name>.data`` beside it.

    Saving with external data moves the weights out of ``model`` in memory too.
    """
    try:
        if external:
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
        else:
            with open(path, "wb") as f:
                write_model(model, f)
    except OSError as e:
        raise FusekitError(f"{path.name}: cannot write: {e.strerror or e}") from None


@contextmanager
def staged(path: str | os.PathLike, protect: tuple = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move what was written there into place on success.

    Nothing reaches ``path`` unless the block completes, so a failure (or a failed
    verification) leaves no partial output. ``protect`` lists files (the inputs) that
    must never be replaced.
    """
    out = check_destination(path, protect)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:
        raise FusekitError(f"{out}: cannot write in {out.parent}: {e.strerror or e}") from None
    try:
        yield tmp / out.name
        # the weights file first, so the model never points at a missing one
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == out.name):
            os.replace(f, out.parent / f.name)
    except OSError as e:
        raise FusekitError(f"{out}: cannot write: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save(model: onnx.ModelProto, path: str | os.PathLike, *, external: bool | None = None, protect: tuple = ()):
    """Write ``model`` to ``path`` atomically; ``external`` defaults to "needed for size"."""
    if external is None:
        external = model.ByteSize() >= TWO_GB or uses_external_data(model)
    with staged(path, protect) as p:
        write(model, p, external)


def check_destination(path: str | os.PathLike, protect: tuple = ()) -> Path:
    """Refuse, before any work is done, an output that cannot be written or would replace an input."""
    out = Path(path)
    if any(_same(out, q) or _same(out.with_name(out.name + ".data"), q) for q in protect):
        raise FusekitError(f"{out}: refusing to overwrite the input model; choose another output path")
    if not out.parent.is_dir():
        raise FusekitError(f"{out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise FusekitError(f"{out}: the folder {out.parent} is not writable")
    if out.is_dir():
        raise FusekitError(f"{out}: is a directory")
    return out


def _same(a: Path, b) -> bool:
    try:
        return a.exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
