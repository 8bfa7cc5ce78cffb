"""Small graphs in the forms ONNX Runtime's own fusion tests build
(onnxruntime/test/testdata/transform/fusion/*_gen.py), written afresh for fusekit's tests.

Each builder returns an ``onnx.ModelProto``. The forms:

- GELU in float16 with float16 constants (fp16's √2 is 1.4140625), as every fp16
  converter leaves it;
- FastGelu with the square multiplied as x·(x·0.044715) (ORT's fast_gelu tests,
  GPT-2-style exports), optionally after a bias Add;
- a bias Add before the standard ONNX ``Gelu`` (opset 20, approximate none or tanh);
- the erf GELU after a bias that is a graph input, the Add's inputs in either order
  (ORT's bias_gelu_add_inputs_swapped);
- LayerNorm with Casts in ORT's placements (layer_norm_with_cast_2 and _3).
"""
import math

import numpy as np
from onnx import TensorProto, helper, numpy_helper

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
SQRT_2_OVER_PI, CUBIC = math.sqrt(2 / math.pi), 0.044715


def _model(nodes, inputs, outputs, inits, opset=14):
    graph = helper.make_graph(nodes, "forms", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8 if opset <= 17 else 9, producer_name="fusekit.testmodels")


def _io(name, elem, width, batch=True):
    shape = ["batch", "seq", width] if batch else [width]
    return helper.make_tensor_value_info(name, elem, shape)


def gelu_erf_fp16(sqrt2=math.sqrt(2), half=0.5, width=16):
    """x · 0.5 · (1 + erf(x / √2)) with float16 input and constants, as fp16 converters leave it."""
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["scaled"], name="div"),
             helper.make_node("Erf", ["scaled"], ["erf"], name="erf"),
             helper.make_node("Add", ["erf", "one"], ["erf1"], name="add"),
             helper.make_node("Mul", ["x", "erf1"], ["xerf"], name="mul"),
             helper.make_node("Mul", ["xerf", "half"], ["y"], name="mul_half")]
    inits = {"sqrt2": np.float16(sqrt2), "one": np.float16(1), "half": np.float16(half)}
    return _model(nodes, [_io("x", F16, width)], [_io("y", F16, width)], inits)


def fast_gelu_fp16(cubic=CUBIC, width=16):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in float16 (Optimum's fp16 ALBERT)."""
    nodes = [helper.make_node("Pow", ["x", "three"], ["cube"], name="pow"),
             helper.make_node("Mul", ["cube", "a"], ["acube"], name="mul_a"),
             helper.make_node("Add", ["x", "acube"], ["inner"], name="add_x"),
             helper.make_node("Mul", ["inner", "k"], ["scaled"], name="mul_k"),
             helper.make_node("Tanh", ["scaled"], ["tanh"], name="tanh"),
             helper.make_node("Add", ["tanh", "one"], ["tanh1"], name="add_one"),
             helper.make_node("Mul", ["x", "half"], ["xhalf"], name="mul_half"),
             helper.make_node("Mul", ["xhalf", "tanh1"], ["y"], name="mul")]
    inits = {"three": np.float16(3), "a": np.float16(cubic), "k": np.float16(SQRT_2_OVER_PI),
             "one": np.float16(1), "half": np.float16(0.5)}
    return _model(nodes, [_io("x", F16, width)], [_io("y", F16, width)], inits)


def fast_gelu_x_xa(bias=False, cubic=0.044714998453855515, width=64):
    """x·0.5·(1 + tanh(√(2/π)·x·(1 + x·(x·0.044715)))) as ORT's fast_gelu tests build it,
    the input optionally after Add(bias); the output through an Identity."""
    x = "input"
    nodes = []
    inits = {"mul1_init": np.float32(cubic), "mul2_init": np.float32(0.7978845834732056),
             "mul3_init": np.float32(0.5), "add1_init": np.float32(1), "add2_init": np.float32(1)}
    if bias:
        inits["input_bias"] = (0.01 * np.arange(width)).astype(np.float32)
        nodes.append(helper.make_node("Add", [x, "input_bias"], ["add0"], name="add0"))
        x = "add0"
    nodes += [helper.make_node("Mul", [x, "mul1_init"], ["mul1"], name="mul1"),
              helper.make_node("Mul", [x, "mul1"], ["mul2"], name="mul2"),
              helper.make_node("Add", ["mul2", "add1_init"], ["add1"], name="add1"),
              helper.make_node("Mul", [x, "mul2_init"], ["mul3"], name="mul3"),
              helper.make_node("Mul", ["mul3", "add1"], ["mul4"], name="mul4"),
              helper.make_node("Tanh", ["mul4"], ["tanh"], name="tanh"),
              helper.make_node("Add", ["tanh", "add2_init"], ["add2"], name="add2"),
              helper.make_node("Mul", [x, "mul3_init"], ["mul5"], name="mul5"),
              helper.make_node("Mul", ["mul5", "add2"], ["mul6"], name="mul6"),
              helper.make_node("Identity", ["mul6"], ["output"], name="identity_ending")]
    return _model(nodes, [_io("input", F32, width)], [_io("output", F32, width)], inits)


def bias_onnx_gelu(approximate="none", bias="input", bias_width=None, swapped=False, width=32):
    """Add(X, B) → ONNX Gelu (opset 20), B a 1-D graph input (``bias="input"``) or initializer."""
    bias_width = width if bias_width is None else bias_width
    add_inputs = ["B", "X"] if swapped else ["X", "B"]
    nodes = [helper.make_node("Add", add_inputs, ["add0_out"], name="add0"),
             helper.make_node("Gelu", ["add0_out"], ["Y"], name="gelu", approximate=approximate)]
    inputs, inits = [_io("X", F32, width)], {}
    if bias == "input":
        inputs.append(_io("B", F32, bias_width, batch=False))
    else:
        inits["B"] = np.random.default_rng(0).standard_normal(bias_width).astype(np.float32)
    return _model(nodes, inputs, [_io("Y", F32, width)], inits, opset=20)


def bias_gelu_graph_input(swapped=True, bias_width=None, width=32):
    """The erf GELU after Add(B, A), both graph inputs through Identity, B the 1-D bias
    (ORT's bias_gelu_add_inputs_swapped: the bias is the Add's first input)."""
    bias_width = width if bias_width is None else bias_width
    nodes = [helper.make_node("Identity", ["A"], ["A_out"], name="identity_A"),
             helper.make_node("Identity", ["B"], ["B_out"], name="identity_B"),
             helper.make_node("Add", ["B_out", "A_out"] if swapped else ["A_out", "B_out"], ["add0_out"], name="add0"),
             helper.make_node("Div", ["add0_out", "div_const"], ["div_out"], name="div"),
             helper.make_node("Mul", ["add0_out", "mul_const"], ["mul_out"], name="mul0"),
             helper.make_node("Erf", ["div_out"], ["erf_out"], name="erf"),
             helper.make_node("Add", ["erf_out", "add_const"], ["add1_out"], name="add1"),
             helper.make_node("Mul", ["mul_out", "add1_out"], ["C"], name="mul1")]
    inits = {"div_const": np.float32(1.4142135381698608), "mul_const": np.float32(0.5), "add_const": np.float32(1)}
    inputs = [_io("A", F32, width), _io("B", F32, bias_width, batch=False)]
    return _model(nodes, inputs, [_io("C", F32, width)], inits)


def layer_norm_with_cast(placement: str, width=4, opset=14):
    """LayerNorm with the Casts of ORT's layer_norm_with_cast tests.

    ``"pow_exponent"``: float16 throughout, the exponent 2 a float32 constant Cast to float16
    (layer_norm_with_cast_2). ``"before_scale"``: float32 statistics, Cast to float16 before
    float16 γ and β (layer_norm_with_cast_3).
    """
    rng = np.random.default_rng(0)
    gamma = (1 + 0.1 * rng.standard_normal(width)).astype(np.float16)
    beta = (0.1 * rng.standard_normal(width)).astype(np.float16)
    fp16_stats = placement == "pow_exponent"
    nodes = [helper.make_node("ReduceMean", ["A"], ["mean"], name="reduce", axes=[-1]),
             helper.make_node("Sub", ["A", "mean"], ["d"], name="sub")]
    if fp16_stats:
        nodes.append(helper.make_node("Cast", ["two_f32"], ["two"], name="cast", to=F16))
    nodes += [helper.make_node("Pow", ["d", "two"], ["d2"], name="pow"),
              helper.make_node("ReduceMean", ["d2"], ["var"], name="reduce2", axes=[-1]),
              helper.make_node("Add", ["var", "eps"], ["var_eps"], name="add"),
              helper.make_node("Sqrt", ["var_eps"], ["std"], name="sqrt"),
              helper.make_node("Div", ["d", "std"], ["normalized"], name="div")]
    normalized = "normalized"
    if not fp16_stats:
        nodes.append(helper.make_node("Cast", ["normalized"], ["normalized16"], name="cast", to=F16))
        normalized = "normalized16"
    nodes += [helper.make_node("Mul", ["gamma", normalized], ["scaled"], name="mul"),
              helper.make_node("Add", ["beta", "scaled"], ["C"], name="add2")]
    stat = np.float16 if fp16_stats else np.float32
    inits = {"eps": stat(1e-5), "gamma": gamma, "beta": beta}
    inits["two_f32" if fp16_stats else "two"] = np.float32(2)
    x_type = F16 if fp16_stats else F32
    return _model(nodes, [helper.make_tensor_value_info("A", x_type, [16, 32, width])],
                  [helper.make_tensor_value_info("C", F16, [16, 32, width])], inits, opset=opset)
