"""LayerNorm with Casts in ONNX Runtime's placements (layer_norm_with_cast_2 and _3, from
onnxruntime/test/testdata/transform/fusion/*_gen.py), written afresh for fusekit's tests. The
GELU forms of those tests live beside their fusions' tests (tests/fusions/).
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _model(nodes, inputs, outputs, inits, opset=14):
    graph = helper.make_graph(nodes, "forms", inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=8 if opset <= 17 else 9, producer_name="fusekit.testmodels")


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
