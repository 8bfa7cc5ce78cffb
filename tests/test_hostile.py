"""Corrupted and hostile model files through every command: exit 0, 1 or 2, never an internal
error or a traceback, a refusal in one line, the input untouched and no partial output."""
import hashlib
import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import TESTMODELS
from fusekit.cli import main

COMMANDS = {
    "inspect": lambda m, out: ["inspect", m, "--html", out / "page.html"],
    "explain": lambda m, out: ["explain", m],
    "optimize": lambda m, out: ["optimize", m, "-o", out / "fused.onnx", "--trials", "1", "--json", out / "r.json"],
    "verify": lambda m, out: ["verify", m, m, "--trials", "1"],
    "run": lambda m, out: ["run", m, "--save", out / "outputs.npz"],
    "diff": lambda m, out: ["diff", m, m],
    "bench": lambda m, out: ["bench", m, "--iterations", "1", "--warmup", "0", "--seq", "8"],
}


def run_every_command(model, tmp_path, capsys) -> dict[str, tuple[int, str]]:
    """Each command's exit code and stderr, after checking what it did to the files."""
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    results = {}
    for name, args in COMMANDS.items():
        out = tmp_path / f"out_{name}"
        out.mkdir(exist_ok=True)
        code = main([str(a) for a in args(model, out)])
        stdout, stderr = capsys.readouterr()
        case = (model.name, name, code, stderr)
        assert code in (0, 1, 2), case
        assert "internal error" not in stderr and "Traceback" not in stdout + stderr, case
        if code == 2:
            assert stderr.startswith("fusekit: error: ") and stderr.count("\n") == 1, case
            assert not list(out.iterdir()), case  # nothing written, not even in part
        assert not [p for p in out.iterdir() if p.name.startswith(".")], case  # no staging left behind
        assert hashlib.sha256(model.read_bytes()).hexdigest() == before, case
        results[name] = code, stderr
        for p in out.iterdir():
            p.unlink()
    return results


def corrupt(data: bytes, seed: int) -> bytes:
    """A truncation, flipped bits, inserted junk or a zeroed run, chosen by ``seed``."""
    rng, d = random.Random(seed), bytearray(data)
    kind, at = seed % 4, rng.randrange(len(d))
    if kind == 0:
        del d[at:]
    elif kind == 1:
        for i in rng.sample(range(len(d)), rng.randint(1, 8)):
            d[i] ^= 1 << rng.randrange(8)
    elif kind == 2:
        d[at:at] = rng.randbytes(rng.randint(1, 64))
    else:
        n = rng.randint(1, 256)
        d[at:at + n] = bytes(len(d[at:at + n]))
    return bytes(d)


@pytest.mark.parametrize("seed", range(12))
def test_seeded_corruption_of_a_shipped_model(seed, tmp_path, capsys):
    path = tmp_path / f"corrupt_{seed}.onnx"
    path.write_bytes(corrupt((TESTMODELS / "bert_tiny_opset14.onnx").read_bytes(), seed))
    run_every_command(path, tmp_path, capsys)


@pytest.mark.parametrize("field", ["node name", "op type", "metadata value"])
def test_text_that_is_not_utf8_is_a_corrupted_file(field, tmp_path, capsys):
    model = onnx.load(TESTMODELS / "bert_tiny_opset14.onnx")
    marker = "QQmarkQQ"  # becomes bytes that are not UTF-8, of the same length, once serialized
    if field == "node name":
        model.graph.node[5].name = marker
    elif field == "op type":
        model.graph.node[7].op_type = marker
    else:
        onnx.helper.set_model_props(model, {"note": marker})
    path = tmp_path / "text.onnx"
    path.write_bytes(model.SerializeToString().replace(marker.encode(), b"QQ\x80\xffmaQQ"))
    for code, stderr in run_every_command(path, tmp_path, capsys).values():
        assert code == 2 and "is not UTF-8: the file is corrupted" in stderr, stderr


def _tiny(nodes, inputs=("x",), outputs=("y",), inits=(), opset=14, width=4):
    graph = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, width])
                                                 for n in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, width]) for n in outputs],
                              list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _short_weights(dims=(2, 4), raw=True):
    w = helper.make_tensor("W", TensorProto.FLOAT, [2, 4], np.zeros(8, np.float32), raw=raw)
    if raw:
        w.raw_data = w.raw_data[:12]
    else:
        del w.float_data[3:]
    w.dims[:] = dims
    return w


def _weights(name="W", width=4):
    return numpy_helper.from_array(np.arange(2 * width, dtype=np.float32).reshape(2, width) + 1, name)


HOSTILE = {
    "cycle": (_tiny([helper.make_node("Add", ["x", "b"], ["a"], name="A"),
                     helper.make_node("Relu", ["a"], ["b"], name="B"),
                     helper.make_node("Identity", ["b"], ["y"], name="C")]), "the graph has a cycle"),
    "dangling_input": (_tiny([helper.make_node("Add", ["x", "nowhere"], ["y"], name="A")]),
                       "node 'A' reads 'nowhere', which is no graph input, initializer or node output"),
    "self_loop": (_tiny([helper.make_node("Add", ["x", "y"], ["y"], name="A")]), "reads its own output"),
    # ONNX Runtime runs it and returns y twice: so does every command
    "duplicate_graph_outputs": (_tiny([helper.make_node("Relu", ["x"], ["y"])], outputs=("y", "y")), None),
    "duplicate_node_outputs": (_tiny([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])]),
                               "invalid ONNX model"),
    "not_onnx_op": (_tiny([helper.make_node("Erfc", ["x"], ["y"])]), "invalid ONNX model"),
    "short_weights": (_tiny([helper.make_node("Add", ["x", "W"], ["y"])],
                            inits=[_short_weights()]),
                      "tensor W holds 12 bytes where its shape [2, 4] needs 32"),
    "short_float_data": (_tiny([helper.make_node("Add", ["x", "W"], ["y"])], inits=[_short_weights(raw=False)]),
                         "tensor W holds 3 values where its shape [2, 4] needs 8"),
    "huge_weight_dims": (_tiny([helper.make_node("Add", ["x", "W"], ["y"])],
                               inits=[_short_weights(dims=(2**40, 2**40))]),
                         "holds 12 bytes where its shape [1099511627776, 1099511627776] needs 4835703278458516698824704"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_graph(name, tmp_path, capsys):
    model, message = HOSTILE[name]
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    for command, (code, stderr) in run_every_command(path, tmp_path, capsys).items():
        assert (code, message in stderr) == (2, True) if message else code == 0, (command, stderr)


def _with_external_location(folder, location):
    model = _tiny([helper.make_node("Add", ["x", "W"], ["y"])], inits=[_weights()])
    onnx.save_model(model, folder / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    model = onnx.load(folder / "m.onnx", load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    onnx.save(model, folder / "m.onnx")
    return folder / "m.onnx"


@pytest.mark.parametrize("location", ["../../../../../etc/hostname", "/etc/hostname", "inner/../../outside.bin",
                                      "link.bin"])
def test_external_data_outside_the_models_folder_is_refused(location, tmp_path, capsys):
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\0" * 32)
    (folder / "link.bin").symlink_to(tmp_path / "outside.bin")  # inside by name, outside in fact
    path = _with_external_location(folder, location)
    for command, (code, stderr) in run_every_command(path, tmp_path, capsys).items():
        assert code == 2 and stderr.endswith("the external data of tensor W points outside the model's folder; "
                                             "refusing to read it\n"), (command, stderr)


def test_external_data_without_a_location_is_a_corrupted_file(tmp_path, capsys):
    path = _with_external_location(tmp_path, "")
    for command, (code, stderr) in run_every_command(path, tmp_path, capsys).items():
        assert code == 2 and "the external data of tensor W names no file" in stderr, (command, stderr)


def test_tensor_names_never_steer_where_weights_are_written(tmp_path, capsys):
    """Weights are written to OUT.data whatever the tensors are called."""
    folder, out = tmp_path / "model", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    names = ["../escaped", "/tmp/fusekit_absolute", "sub/dir/w"]
    model = _tiny([helper.make_node("Add", ["x", names[0]], ["a"]), helper.make_node("Add", ["a", names[1]], ["b"]),
                   helper.make_node("Add", ["b", names[2]], ["y"])], inits=[_weights(n, 512) for n in names], width=512)
    onnx.save_model(model, folder / "m.onnx", save_as_external_data=True, location="m.data", size_threshold=0)
    assert main(["optimize", str(folder / "m.onnx"), "-o", str(out / "fused.onnx")]) == 0, capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["fused.onnx", "fused.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]
    assert sorted(p.name for p in folder.iterdir()) == ["m.data", "m.onnx"]
    written = onnx.load(out / "fused.onnx", load_external_data=False)
    locations = {e.value for t in written.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations <= {"fused.onnx.data"}
