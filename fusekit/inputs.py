"""Random inputs that respect what each model input means.

Token ids stay inside the vocabulary (read off the embedding Gather's table),
attention masks are 0/1 with padding on some rows, token type ids are 0/1, position
ids count up, and dynamic dimensions are bound to sensible sizes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx

from .errors import FusekitError

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


def _role(name: str, dtype: np.dtype) -> str:
    n = name.lower()
    if "mask" in n:
        return "mask"
    if "token_type" in n or "segment" in n:
        return "token_type"
    if "position" in n:
        return "position"
    if np.issubdtype(dtype, np.integer):
        return "ids"
    return "float"


def _vocab_size(model: onnx.ModelProto, name: str) -> int | None:
    """The row count of the embedding table the ids index, following Casts and reshapes."""
    inits = {t.name: t for t in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node
              if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"}
    # a weightless skeleton declares its tables as inputs of the same shape
    declared = {i.name: onnx.TensorShapeProto(dim=i.type.tensor_type.shape.dim) for i in model.graph.input}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
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


def make_inputs(model: onnx.ModelProto, setting: Setting = Setting(), seed: int = 0,
                shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = shapes or {}
    initializers = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        elem = vi.type.tensor_type.elem_type
        if not elem:
            raise FusekitError(f"input '{vi.name}' is not a tensor; fusekit only feeds tensor inputs")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
        shape = _dims(vi, setting, shapes.get(vi.name))
        role = _role(vi.name, dtype)
        if role == "mask":
            feeds[vi.name] = _mask(shape, rng, setting.padding, dtype)
        elif role == "token_type":
            feeds[vi.name] = rng.integers(0, 2, shape).astype(dtype)
        elif role == "position":
            feeds[vi.name] = np.broadcast_to(np.arange(shape[-1]), shape).astype(dtype).copy()
        elif role == "ids":
            vocab = _vocab_size(model, vi.name) or 100
            feeds[vi.name] = rng.integers(0, vocab, shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[vi.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def valid_positions(feeds: dict[str, np.ndarray]) -> np.ndarray | None:
    """The 0/1 attention mask (batch, seq) fed to the model, if it has one."""
    for name, value in feeds.items():
        if "mask" in name.lower() and value.ndim == 2:
            return value.astype(bool)
    return None


__all__ = ["Setting", "SETTINGS", "make_inputs", "parse_shapes", "valid_positions"]
