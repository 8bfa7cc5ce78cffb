"""Reading and writing ONNX files one weight at a time.

``onnx.load`` holds the whole file as bytes while it parses, and ``onnx.save`` the
whole serialized model while it writes: twice a model's size at the peak. A
protobuf message is just its fields one after another, so a model can be read and
written field by field, the graph's initializers one at a time, into a file every
ONNX reader parses to the same model. Only the two fields that hold the weights are streamed (ModelProto.graph
and GraphProto.initializer); every other field goes through protobuf as usual.
"""
from __future__ import annotations

import math
from typing import BinaryIO

import onnx

MODEL_GRAPH = 7  # ModelProto.graph
GRAPH_INITIALIZER = 5  # GraphProto.initializer
RAW_DATA = 9  # TensorProto.raw_data
LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(f: BinaryIO) -> int | None:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise ValueError("the file ends inside a field header")
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7


def _fields(f: BinaryIO, end: int):
    """(number, wire type, payload) for each field up to offset ``end``; large payloads are read lazily."""
    while f.tell() < end:
        key = _read_varint(f)
        if key is None:
            return
        number, wire = key >> 3, key & 7
        start = f.tell()
        if wire == 0:
            _read_varint(f)
        elif wire == 1:
            f.seek(8, 1)
        elif wire == 5:
            f.seek(4, 1)
        elif wire == LENGTH_DELIMITED:
            length = _read_varint(f)
            start = f.tell()
            f.seek(length, 1)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if f.tell() > end:
            raise ValueError("the file ends inside a field")
        yield number, wire, start, f.tell(), key


def read_model(f: BinaryIO, size: int) -> tuple[onnx.ModelProto, list[int | None]]:
    """Parse a model from ``f`` keeping at most one weight's bytes in memory besides the model.

    Also returns, for each of the graph's initializers, the length of the raw_data it stores
    (None: none, or a field this reader does not walk), read off the wire: asking protobuf
    for it would copy the bytes."""
    model, rest, raw_lengths = onnx.ModelProto(), bytearray(), []
    for number, wire, start, stop, key in _fields(f, size):
        if number == MODEL_GRAPH and wire == LENGTH_DELIMITED:
            f.seek(start)
            _read_graph(f, stop, model.graph, raw_lengths)
        else:
            f.seek(start)
            rest += _varint(key) + (_varint(stop - start) if wire == LENGTH_DELIMITED else b"") + f.read(stop - start)
        f.seek(stop)
    model.MergeFromString(bytes(rest))
    return model, raw_lengths


def _read_graph(f: BinaryIO, end: int, graph: onnx.GraphProto, raw_lengths: list[int | None]):
    rest, buffer = bytearray(), bytearray()
    for number, wire, start, stop, key in _fields(f, end):
        f.seek(start)
        if number == GRAPH_INITIALIZER and wire == LENGTH_DELIMITED:
            # one buffer for every weight: a fresh one each would be new pages to fault in
            if len(buffer) < stop - start:
                buffer = bytearray(stop - start)
            payload = memoryview(buffer)[:stop - start]
            if f.readinto(payload) != len(payload):
                raise ValueError("the file ends inside a field")
            graph.initializer.add().ParseFromString(payload)
            raw_lengths.append(_raw_data_length(payload))
        else:
            payload = f.read(stop - start)
            rest += _varint(key) + (_varint(len(payload)) if wire == LENGTH_DELIMITED else b"") + payload
        f.seek(stop)
    graph.MergeFromString(bytes(rest))


def _raw_data_length(tensor: memoryview) -> int | None:
    """The length of the raw_data a serialized TensorProto holds (its last, which protobuf keeps)."""
    pos, length = 0, None
    while pos < len(tensor):
        key, pos = _varint_at(tensor, pos)
        wire = key & 7
        if wire == 0:
            pos = _varint_at(tensor, pos)[1]
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == LENGTH_DELIMITED:
            n, pos = _varint_at(tensor, pos)
            if key >> 3 == RAW_DATA:
                length = n
            pos += n
        else:
            return None  # a group: protobuf parsed it; leave the length to it
    return length


def _varint_at(data: memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` in a payload protobuf has parsed (so it is well formed), and the position after it."""
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def write_model(model: onnx.ModelProto, f: BinaryIO):
    """Write ``model`` (the graph last), one weight at a time, each serialized once.

    The graph's length comes before its weights, so their sizes are needed first. protobuf
    measures a message by encoding it, so each weight's size is computed from its shape
    instead, and checked against what it serializes to; a weight whose bytes do not fill its
    shape is only measured right by encoding, so on a mismatch the graph is written again that way.
    """
    header = onnx.ModelProto()
    _copy_except(model, header, "graph")
    f.write(header.SerializeToString())
    if not model.HasField("graph"):
        return
    start = f.tell()
    if not _write_graph(model.graph, f, _expected_size):
        f.seek(start)
        f.truncate()
        _write_graph(model.graph, f, lambda tensor: tensor.ByteSize())


def _write_graph(graph: onnx.GraphProto, f: BinaryIO, size_of) -> bool:
    """Write ``graph`` as ModelProto.graph, its initializers taken to be ``size_of`` them; False
    as soon as one serializes to another size."""
    rest = onnx.GraphProto()
    _copy_except(graph, rest, "initializer")
    rest_bytes = rest.SerializeToString()
    key = _varint(GRAPH_INITIALIZER << 3 | LENGTH_DELIMITED)
    sizes = [size_of(t) for t in graph.initializer]
    total = len(rest_bytes) + sum(len(key) + len(_varint(s)) + s for s in sizes)
    f.write(_varint(MODEL_GRAPH << 3 | LENGTH_DELIMITED) + _varint(total) + rest_bytes)
    for tensor, s in zip(graph.initializer, sizes):
        data = tensor.SerializeToString()
        if len(data) != s:
            return False
        f.write(key + _varint(s))
        f.write(data)
    return True


def _expected_size(tensor: onnx.TensorProto) -> int:
    """The serialized size of ``tensor`` if its raw_data holds exactly what its shape needs."""
    if not tensor.HasField("raw_data"):
        return tensor.ByteSize()  # nothing large to copy: its values, if any, are in typed fields
    try:
        width = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        width = 0  # an unknown type: its raw_data has no expected length, and the check rewrites it
    length = width * math.prod(tensor.dims)
    rest = onnx.TensorProto()
    for field in tensor.DESCRIPTOR.fields:  # every field but raw_data, which reading would copy
        if field.name == "raw_data":
            continue
        if field.is_repeated:
            getattr(rest, field.name).extend(getattr(tensor, field.name))
        elif tensor.HasField(field.name):
            if field.message_type is not None:
                getattr(rest, field.name).CopyFrom(getattr(tensor, field.name))
            else:
                setattr(rest, field.name, getattr(tensor, field.name))
    return rest.ByteSize() + len(_varint(RAW_DATA << 3 | LENGTH_DELIMITED)) + len(_varint(length)) + length


def _copy_except(source, target, skipped: str):
    """Copy every set field of ``source`` into ``target`` but ``skipped``."""
    for field, value in source.ListFields():
        if field.name == skipped:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)
