"""Loading and saving models safely: clear one-line errors, atomic writes, external data.

Writes go to a temporary folder beside the destination and are renamed into place
only when complete, so a failure never leaves a half-written model and never touches
the input.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from .errors import FusekitError, first_line
from .wire import read_model, write_model

TWO_GB = 2**31
T = onnx.TensorProto
FIXED_SIZE = {T.FLOAT: 4, T.DOUBLE: 8, T.FLOAT16: 2, T.BFLOAT16: 2, T.INT8: 1, T.UINT8: 1, T.INT16: 2,
              T.UINT16: 2, T.INT32: 4, T.UINT32: 4, T.INT64: 8, T.UINT64: 8, T.BOOL: 1}  # bytes per element


def max_opset() -> int:
    return onnx.defs.onnx_opset_version()


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def uses_external_data(model: onnx.ModelProto) -> bool:
    tensors = onnx.external_data_helper._get_all_tensors(model)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors)


@dataclass
class Loaded:
    """A model as fusekit reads it, whether its weights were external, the opset the file
    declares, and what was done to read it (notes for the user: nodes sorted, opset converted, …)."""
    model: onnx.ModelProto
    external: bool
    opset: int
    notes: list[str]


def load(path: str | os.PathLike) -> onnx.ModelProto:
    """Read and validate a model; every problem becomes a FusekitError naming it."""
    return read(path).model


def read(path: str | os.PathLike) -> Loaded:
    """Read a model file as every command reads it.

    A file is input from outside: whatever is wrong with it (truncated, corrupted
    bytes, text that is not UTF-8, weights of the wrong size, external data outside
    its folder, a cycle, an invalid graph) is one FusekitError naming the problem.
    What ONNX Runtime loads but fusekit reads in another form is brought to that form
    (:mod:`fusekit.compat`), and the notes say how.
    """
    from .compat import prepare  # compat reads models through skeleton(), defined here
    p = Path(path)
    if not p.exists():
        raise FusekitError(f"{p}: no such file")
    if p.is_dir():
        raise FusekitError(f"{p}: is a directory, not an ONNX model file")
    if p.stat().st_size == 0:
        raise FusekitError(f"{p}: file is empty")
    try:
        with open(p, "rb") as f:
            model, raw_lengths = read_model(f, p.stat().st_size)
    except OSError as e:
        raise FusekitError(f"{p}: cannot read: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - whatever the parser makes of the bytes, the file is at fault
        raise FusekitError(f"{p}: not a readable ONNX model (the file is truncated or not ONNX: {first_line(e)})") from None
    field = undecodable_text(model)
    if field:
        raise FusekitError(f"{p}: not a readable ONNX model (the text of {field} is not UTF-8: the file is corrupted)")
    if not model.HasField("graph") or not model.graph.node:
        raise FusekitError(f"{p}: not an ONNX model (no graph nodes; the file is truncated or not ONNX)")
    if model.ir_version > onnx.IR_VERSION:
        raise FusekitError(f"{p}: IR version {model.ir_version} is newer than this onnx {onnx.__version__} reads "
                           f"(up to {onnx.IR_VERSION}); upgrade onnx")
    opset = default_opset(model)
    if opset > max_opset():
        raise FusekitError(f"{p}: opset {opset} is newer than this onnx {onnx.__version__} supports "
                           f"(up to {max_opset()}); upgrade onnx")
    external = uses_external_data(model)
    if external:
        load_external_data(model, p)
    check_weights(model, str(p), () if external else raw_lengths)  # external weights were not on the wire
    model, notes = prepare(model, str(p))
    check(model, str(p), str(p))
    return Loaded(model, external, opset, notes)


def load_external_data(model: onnx.ModelProto, path: Path):
    """Read the weights stored beside the model, refusing any file outside its folder."""
    folder = path.parent.resolve()
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location:
            raise FusekitError(f"{path}: the external data of tensor {tensor.name} names no file (the file is corrupted)")
        if not (folder / location).resolve().is_relative_to(folder):
            raise FusekitError(f"{path}: the external data of tensor {tensor.name} points outside the model's "
                               "folder; refusing to read it")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise FusekitError(f"{path}: cannot read its external data: {first_line(e)}") from None


def undecodable_text(message) -> str | None:
    """The first text field of ``message`` (recursively) whose bytes are not UTF-8, else None.

    protobuf decodes text lazily: a corrupted name would otherwise surface as a
    UnicodeDecodeError (or as bytes instead of str) wherever it is first read.
    """
    if isinstance(message, onnx.TensorProto):  # ListFields would copy every weight's bytes
        fields = [(f, getattr(message, f.name)) for f in message.DESCRIPTOR.fields
                  if f.type != f.TYPE_BYTES and (f.is_repeated or message.HasField(f.name))]
    else:
        fields = message.ListFields()
    for field, value in fields:
        values = value if field.is_repeated else [value]
        if field.type == field.TYPE_STRING:
            try:
                if any(isinstance(v, bytes) for v in values):
                    return f"{message.DESCRIPTOR.name}.{field.name}"
            except UnicodeDecodeError:
                return f"{message.DESCRIPTOR.name}.{field.name}"
        elif field.type == field.TYPE_MESSAGE:
            for v in values:
                found = undecodable_text(v)
                if found:
                    return found
    return None


def check_weights(model: onnx.ModelProto, what: str, raw_lengths: list[int | None] = ()):
    """Refuse initializers whose stored values do not fill their shape (a corrupted file).

    ``raw_lengths`` are the raw_data lengths the reader saw (``wire.read_model``), where it saw
    them: reading raw_data from protobuf to measure it would copy every weight."""
    for i, t in enumerate(model.graph.initializer):
        if any(d < 0 for d in t.dims):
            raise FusekitError(f"{what}: invalid ONNX model: tensor {t.name} has a negative dimension {list(t.dims)}")
        if t.data_type not in FIXED_SIZE:
            continue
        count = math.prod(t.dims)
        if t.HasField("raw_data"):
            seen = raw_lengths[i] if i < len(raw_lengths) else None
            held = len(t.raw_data) if seen is None else seen
            need, unit = count * FIXED_SIZE[t.data_type], "bytes"
        else:
            held, need, unit = len(getattr(t, onnx.helper.tensor_dtype_to_field(t.data_type))), count, "values"
        if held != need:
            raise FusekitError(f"{what}: invalid ONNX model: tensor {t.name} holds {held} {unit} where its "
                               f"shape {list(t.dims)} needs {need} (the file is corrupted)")


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
        raise FusekitError(f"{what}: invalid ONNX model: {first_line(e)}") from None


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
