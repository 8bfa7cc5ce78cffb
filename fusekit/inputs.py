"""Random inputs that respect what each model input means, and given inputs checked against the model.

Token ids stay inside the vocabulary (read off the embedding Gather's table),
attention masks are 0/1 with padding on some rows, token type ids are 0/1, position
ids count up, and dynamic dimensions are bound to sensible sizes. ``--shape`` sizes
and the total size are checked before anything is allocated. Arrays a user gives
(``--inputs FEEDS.npz``) are checked by name, dtype, rank and size.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .errors import FusekitError, InputsNeeded

# Made-up inputs beyond this many bytes are refused before anything is allocated.
INPUT_BUDGET = 1 << 30
PASS_THROUGH = {"Cast", "Reshape", "Flatten", "Unsqueeze", "Squeeze", "Identity", "Expand"}


@dataclass(frozen=True)
class Setting:
    """One way to fill the inputs: padding side and the sizes of dynamic dimensions."""

    padding: str = "right"  # "right", "left" or "none" (all-ones masks)
    batch: int = 2
    seq: int = 16

    def __str__(self):
        return f"batch {self.batch}, seq {self.seq}, {self.padding} padding" if self.padding != "none" \
            else f"batch {self.batch}, seq {self.seq}, no padding"


# The settings trials cycle through: both padding sides, all-ones masks, another length.
SETTINGS = [Setting("right", 2, 16), Setting("left", 3, 9), Setting("none", 1, 16), Setting("right", 4, 7)]


def parse_shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    """``["input_ids=2x128"]`` -> ``{"input_ids": (2, 128)}``."""
    shapes = {}
    for spec in specs or []:
        m = re.fullmatch(r"\s*([^=]+?)\s*=\s*(\d+(?:x\d+)*)\s*", spec)
        if not m:
            raise FusekitError(f"--shape {spec!r}: expected NAME=DxDx…, e.g. input_ids=2x128")
        shapes[m.group(1)] = tuple(int(d) for d in m.group(2).split("x"))
    return shapes


def input_role(name: str, dtype: np.dtype) -> str:
    """What an input holds, by its name: mask, token_type, position, ids or float."""
    n = name.lower()
    if "mask" in n:
        return "mask"
    if "token_type" in n or "segment" in n or "type_ids" in n:  # Keras: input_type_ids
        return "token_type"
    if "position" in n:
        return "position"
    if np.issubdtype(dtype, np.integer):
        return "ids"
    return "float"


def _vocab_size(model: onnx.ModelProto, name: str) -> int | None:
    """The row count of the embedding table the ids index, following Casts and reshapes."""
    from .branches import walk
    nodes = list(walk(model.graph))  # a packed model's branches hold its lookups
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in nodes
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    # a weightless skeleton declares its tables as inputs of the same shape
    declared = {i.name: onnx.TensorShapeProto(dim=i.type.tensor_type.shape.dim) for i in model.graph.input}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for i in node.input:
            users.setdefault(i, []).append(node)
    # a table stored quantized (all ops quantized): its rows are the stored integers'
    stored = {n.output[0]: n.input[0] for n in nodes if n.op_type == "DequantizeLinear"}
    frontier, seen = [name], set()
    while frontier:
        value = frontier.pop()
        if value in seen:
            continue
        seen.add(value)
        for node in users.get(value, []):
            table_name = None
            if node.op_type == "Gather" and node.input[1] == value:
                table_name = node.input[0]
            elif node.op_type == "EmbedLayerNormalization":  # a fused model: ids, segments, positions
                slot = list(node.input).index(value)
                table_name = {0: node.input[2], 1: node.input[4] if len(node.input) > 4 else ""}.get(slot)
            elif node.op_type in PASS_THROUGH:
                frontier.extend(node.output)
            table_name = stored.get(table_name, table_name)
            table = inits.get(table_name) or consts.get(table_name)
            if table is not None and table.dims:
                return int(table.dims[0])
            shape = declared.get(table_name)
            if shape is not None and shape.dim and shape.dim[0].dim_value > 0:
                return int(shape.dim[0].dim_value)
    return None


def _dims(value_info, setting: Setting, override) -> tuple[int, ...]:
    if override is not None:
        return override
    dims = []
    for i, d in enumerate(value_info.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(d.dim_value)
        elif "batch" in d.dim_param.lower() or (i == 0 and "seq" not in d.dim_param.lower()):
            dims.append(setting.batch)
        else:
            dims.append(setting.seq)
    return tuple(dims)


def _mask(shape, rng, padding: str, dtype) -> np.ndarray:
    mask = np.ones(shape, dtype=np.int64)
    if padding != "none" and len(shape) == 2 and shape[1] > 1:
        for row in range(shape[0]):
            if row % 2 == 1 or shape[0] == 1:  # every other row padded, so both kinds are present
                keep = int(rng.integers(1, shape[1]))
                if padding == "right":
                    mask[row, keep:] = 0
                else:
                    mask[row, : shape[1] - keep] = 0
    return mask.astype(dtype)


def check_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]):
    """Refuse ``--shape`` sizes the model cannot take: an unknown name, the wrong rank, a fixed
    size changed, two sizes for one symbolic dimension."""
    declared = _declared(model)
    sizes: dict[str, tuple[str, int]] = {}  # symbolic dim → (first input that bound it, its size)
    for name, shape in shapes.items():
        if name not in declared:
            raise FusekitError(f"--shape {name}=…: '{name}' is not an input of the model "
                               f"(its inputs: {', '.join(declared)})")
        dims = declared[name][1]
        fixed = any(isinstance(d, int) and d > 0 and n != d for n, d in zip(shape, dims))
        if (dims and len(shape) != len(dims)) or fixed:
            raise FusekitError(f"--shape: input '{name}' has shape {list(shape)}; the model takes {_spell(dims)}")
        _bind(sizes, name, shape, dims, "--shape")


def _planned(model: onnx.ModelProto, setting: Setting, shapes, names) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Each input to make: its dtype and shape."""
    initializers = {t.name for t in model.graph.initializer}
    planned = {}
    for vi in model.graph.input:
        if vi.name in initializers or (names is not None and vi.name not in names):
            continue
        elem = vi.type.tensor_type.elem_type
        if not elem:
            raise FusekitError(f"input '{vi.name}' is not a tensor; fusekit only feeds tensor inputs")
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
        planned[vi.name] = (dtype, _dims(vi, setting, shapes.get(vi.name)))
    return planned


def _check_size(planned: dict[str, tuple[np.dtype, tuple[int, ...]]]):
    """Refuse, before allocating, inputs too large to make up (a huge fixed dimension)."""
    sizes = {name: int(np.prod(shape, dtype=object)) * dtype.itemsize for name, (dtype, shape) in planned.items()}
    total = sum(sizes.values())
    if total > INPUT_BUDGET:
        name = max(sizes, key=sizes.get)
        dtype, shape = planned[name]
        raise InputsNeeded(f"the model's inputs would take {_bytes(total)} (input '{name}' is {dtype}"
                           f"[{', '.join(map(str, shape))}]), more than the {_bytes(INPUT_BUDGET)} fusekit makes up")


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def make_inputs(model: onnx.ModelProto, setting: Setting = Setting(), seed: int = 0,
                shapes: dict[str, tuple[int, ...]] | None = None, names=None) -> dict[str, np.ndarray]:
    """Inputs for ``model`` (``names`` of them only: a skeleton declares its weights as inputs too).

    Sizes are checked first: an unknown or contradicted ``shapes`` entry, or inputs
    beyond INPUT_BUDGET bytes, raise before anything is allocated.
    """
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    check_shapes(model, shapes)
    planned = _planned(model, setting, shapes, names)
    _check_size(planned)
    feeds = {}
    for name, (dtype, shape) in planned.items():
        role = input_role(name, dtype)
        if role == "mask":
            feeds[name] = _mask(shape, rng, setting.padding, dtype)
        elif role == "token_type":
            feeds[name] = rng.integers(0, 2, shape).astype(dtype)
        elif role == "position":
            feeds[name] = np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype).copy()
        elif role == "ids":
            vocab = _vocab_size(model, name) or 100
            feeds[name] = rng.integers(0, vocab, shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def load_feeds(path: str | Path) -> dict[str, np.ndarray]:
    """The named arrays of an .npz file (``np.savez(path, input_ids=…, …)``)."""
    p = Path(path)
    if not p.exists():
        raise FusekitError(f"{p}: no such file")
    if p.is_dir():
        raise FusekitError(f"{p}: is a directory, not an .npz file")
    if not zipfile.is_zipfile(p):
        with open(p, "rb") as f:
            npy = f.read(6) == b"\x93NUMPY"
        if npy:
            raise FusekitError(f"{p}: holds one unnamed array (.npy); give an .npz of named arrays "
                               "(np.savez(path, input_ids=…, attention_mask=…))")
        raise FusekitError(f"{p}: not an .npz archive (np.savez(path, input_ids=…, …) writes one)")
    try:
        with np.load(p, allow_pickle=False) as archive:  # pickles could run code: refused
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FusekitError(f"{p}: cannot read its arrays ({reason})") from None


def _declared(model: onnx.ModelProto) -> dict[str, tuple[np.dtype, list]]:
    """Each graph input the caller must feed: its dtype and dims (an int, a name, or None)."""
    initializers = {t.name for t in model.graph.initializer}
    declared = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        declared[vi.name] = (onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else None, dims)
    return declared


def _spell(dims: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def check_feeds(feeds: dict[str, np.ndarray], model: onnx.ModelProto, source: str):
    """Refuse feeds the model cannot take: unknown or missing names, wrong dtype, rank or size."""
    declared = _declared(model)
    unknown = [n for n in feeds if n not in declared]
    if unknown:
        raise FusekitError(f"{source}: '{unknown[0]}' is not an input of the model (its inputs: {', '.join(declared)})")
    missing = [n for n in declared if n not in feeds]
    if missing:
        raise FusekitError(f"{source}: no array for the model's input '{missing[0]}' "
                           f"(its inputs: {', '.join(declared)})")
    sizes: dict[str, tuple[str, int]] = {}  # symbolic dim → (first input that bound it, its size)
    for name, (dtype, dims) in declared.items():
        a = feeds[name]
        if dtype is not None and a.dtype != dtype:
            raise FusekitError(f"{source}: input '{name}' is {a.dtype}; the model takes {dtype}")
        wrong_size = any(isinstance(d, int) and d > 0 and n != d for n, d in zip(a.shape, dims))
        if (dims and a.ndim != len(dims)) or wrong_size:
            raise FusekitError(f"{source}: input '{name}' has shape {list(a.shape)}; the model takes {_spell(dims)}")
        _bind(sizes, name, a.shape, dims, source)


def _bind(sizes: dict[str, tuple[str, int]], name: str, shape, dims: list, source: str):
    """Bind each symbolic dimension of ``dims`` to its size in ``shape``; refuse a second, other size."""
    for size, dim in zip(shape, dims):
        if isinstance(dim, str):
            first, bound = sizes.setdefault(dim, (name, size))
            if bound != size:
                raise FusekitError(f"{source}: inputs disagree on '{dim}': '{first}' has {bound}, '{name}' has {size}")


def describe(feeds: dict[str, np.ndarray], setting: Setting | None) -> str:
    """The inputs a trial fed, by their shapes (a fixed-shape model ignores the setting's sizes)."""
    shapes = {a.shape for a in feeds.values()}
    if len(shapes) == 1 and len(next(iter(shapes))) == 2:
        sizes = "batch {}, seq {}".format(*next(iter(shapes)))
    else:
        sizes = ", ".join(f"{name} [{', '.join(map(str, a.shape))}]" for name, a in feeds.items())
    if setting is None or valid_positions(feeds) is None:  # given inputs, or nothing to pad
        return sizes
    return sizes + (", no padding" if setting.padding == "none" else f", {setting.padding} padding")


def valid_positions(feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """The 0/1 attention mask (batch, seq) fed to the model, if it has one."""
    for name, value in feeds.items():
        if "mask" in name.lower() and value.ndim == 2:
            return value.astype(bool)
    return None


__all__ = ["Setting", "SETTINGS", "PASS_THROUGH", "check_feeds", "check_shapes", "describe", "input_role",
           "load_feeds", "make_inputs", "parse_shapes", "valid_positions"]
