"""FastGelu alone (patterns/fusions/fast_gelu.py) on small graphs: each spelling of
0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³))) becomes one com.microsoft FastGelu for ``ort``,
ONNX Gelu(approximate="tanh") at opset 20 otherwise; each near miss names the constant that is off."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from graphs import variants as V
from graphs.variants import A_TANH, K_TANH
from one_rule import apply

MS = "com.microsoft"
ONNX_GELU = 20  # the opset of ONNX Gelu, which the onnx target emits


def tanh_gelu(form="tanh", cube="pow3", square="mul", a_square="square_a", inner="xk_first", order="half_first",
              a=A_TANH, opset=14):
    """0.5 · x · (1 + tanh(...)) spelled as asked.

    form      "tanh": k · (x + a·x³), x³ as ``cube`` "pow3" Pow(x, 3) or "mul_cube" (x·x)·x;
              "factored": x · k · (1 + a·x²) multiplied in the ``inner`` order ("xk_first" (x·k)·p,
              "xpoly_first" (x·p)·k, "kpoly_first" x·(k·p)), a·x² as ``a_square`` "square_a"
              (x², ``square`` "mul" x·x or "pow2" Pow(x, 2), times a) or "x_xa" x·(x·a)
    order     the outer product: "half_first" (0.5·x)·t, "half_after" (x·t)·0.5, "half_inner" x·(0.5·t)
    """
    g, x = V._io("fast_gelu", opset)
    k, coeff, one = g.const("k", K_TANH), g.const("a", a), g.const("one", 1.0)
    if form == "tanh":
        cubed = g.op("Pow", x, g.const("three", 3.0)) if cube == "pow3" else g.op("Mul", g.op("Mul", x, x), x)
        t = g.op("Tanh", g.op("Mul", g.op("Add", x, g.op("Mul", cubed, coeff)), k))
    else:
        if a_square == "x_xa":
            ax2 = g.op("Mul", x, g.op("Mul", x, coeff))
        else:
            sq = g.op("Mul", x, x) if square == "mul" else g.op("Pow", x, g.const("two", 2.0))
            ax2 = g.op("Mul", sq, coeff)
        poly = g.op("Add", ax2, one)
        t = g.op("Tanh", {"xk_first": lambda: g.op("Mul", g.op("Mul", x, k), poly),
                          "xpoly_first": lambda: g.op("Mul", g.op("Mul", x, poly), k),
                          "kpoly_first": lambda: g.op("Mul", x, g.op("Mul", k, poly))}[inner]())
    half, t1 = g.const("half", 0.5), g.op("Add", t, one)
    {"half_first": lambda: g.op("Mul", g.op("Mul", half, x), t1, out="y"),
     "half_after": lambda: g.op("Mul", g.op("Mul", x, t1), half, out="y"),
     "half_inner": lambda: g.op("Mul", x, g.op("Mul", half, t1), out="y")}[order]()
    return g.model()


def fast_gelu_fp16(cubic=A_TANH, width=16):
    """0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) in float16 (Optimum's fp16 ALBERT)."""
    nodes = [helper.make_node("Pow", ["x", "three"], ["cube"], name="pow"),
             helper.make_node("Mul", ["cube", "a"], ["acube"], name="mul_a"),
             helper.make_node("Add", ["x", "acube"], ["inner"], name="add_x"),
             helper.make_node("Mul", ["inner", "k"], ["scaled"], name="mul_k"),
             helper.make_node("Tanh", ["scaled"], ["tanh"], name="tanh"),
             helper.make_node("Add", ["tanh", "one"], ["tanh1"], name="add_one"),
             helper.make_node("Mul", ["x", "half"], ["xhalf"], name="mul_half"),
             helper.make_node("Mul", ["xhalf", "tanh1"], ["y"], name="mul")]
    inits = [numpy_helper.from_array(np.array(v, np.float16), k)
             for k, v in {"three": 3, "a": cubic, "k": K_TANH, "one": 1, "half": 0.5}.items()]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, ["batch", "seq", width]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "fast_gelu_fp16", io[:1], io[1:], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


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
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", width]) for n in ("input", "output")]
    graph = helper.make_graph(nodes, "fast_gelu_x_xa", io[:1], io[1:],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


# name: (the spelling, the variant and labels its record names)
VARIANTS = {
    "pow3": (dict(), "tanh[pow3,half_first]"),  # F.gelu(approximate="tanh"), gelu_new
    "mul_cube": (dict(cube="mul_cube"), "tanh[mul_cube,half_first]"),  # x³ as Mul·Mul
    "half_after": (dict(order="half_after"), "tanh[pow3,half_after]"),
    "half_inner": (dict(order="half_inner"), "tanh[pow3,half_inner]"),  # tf2onnx: Mul(0.5) then Mul(x)
    "factored": (dict(form="factored"), "tanh_factored[xk_first,half_first]"),  # Megatron / OpenAI
    "factored_pow2": (dict(form="factored", square="pow2"), "tanh_factored[xk_first,half_first,pow2]"),
    "factored_x_xa": (dict(form="factored", a_square="x_xa"), "tanh_factored[x_xa,xk_first,half_first]"),
    "factored_xpoly_first": (dict(form="factored", inner="xpoly_first"), "tanh_factored[xpoly_first,half_first]"),
    "factored_kpoly_first": (dict(form="factored", inner="kpoly_first"), "tanh_factored[kpoly_first,half_first]"),
}


@pytest.mark.parametrize("target, op", [("ort", (MS, "FastGelu")), ("onnx", ("", "Gelu"))])
@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_fuses_to_target_form(name, target, op):
    spelling, variant = VARIANTS[name]
    applied = apply("FastGelu", tanh_gelu(**spelling, opset=ONNX_GELU if target == "onnx" else 14), target=target)
    assert applied.rewrote == 1 and applied.made[op[1]] == 1 and applied.made["Tanh"] == -1
    assert applied.records[0].variant == variant
    (node,) = applied.model.graph.node
    assert (node.domain, node.op_type) == op and list(node.input) == ["x"]
    result = applied.assert_equivalent()
    assert all(o.max_rel <= 1e-5 for o in result.outputs), result.summary()


@pytest.mark.parametrize("build", [V.gelu_tanh_pow, V.gelu_tanh_mul3, V.gelu_tanh_factored])
def test_the_exporters_spellings_fuse(build):
    """The tanh GELUs of tests/graphs/variants.py, as the exporters write them."""
    applied = apply("FastGelu", build())
    assert applied.rewrote == 1 and applied.ops() == {"FastGelu"}
    result = applied.assert_equivalent()
    assert all(o.max_rel <= 1e-5 for o in result.outputs), result.summary()


def test_tanh_form_on_onnx_target_is_approximate_gelu():
    applied = apply("FastGelu", V.gelu_tanh_pow(opset=ONNX_GELU), target="onnx")
    (node,) = applied.model.graph.node
    assert {a.name: a.s for a in node.attribute} == {"approximate": b"tanh"}


def test_float16_fast_gelu_fuses_and_verifies():
    applied = apply("FastGelu", fast_gelu_fp16())
    (node,) = applied.model.graph.node
    assert (node.domain, node.op_type) == (MS, "FastGelu") and applied.rewrote == 1
    assert applied.records[0].variant == "tanh[pow3,half_first]"
    applied.assert_equivalent()


def test_fast_gelu_x_times_x_times_coefficient():
    """ORT's fast_gelu graph: the square multiplied as x·(x·0.044715), the output through an Identity."""
    applied = apply("FastGelu", fast_gelu_x_xa())
    assert applied.ops() == {"FastGelu", "Identity"} and applied.rewrote == 1
    assert applied.records[0].variant.startswith("tanh_factored[x_xa")
    applied.assert_equivalent()


def test_fast_gelu_x_times_x_times_coefficient_after_a_bias():
    """The bias Add is left to BiasGelu: FastGelu reads its sum."""
    applied = apply("FastGelu", fast_gelu_x_xa(bias=True))
    (node,) = [n for n in applied.model.graph.node if n.op_type == "FastGelu"]
    assert list(node.input) == ["add0"] and applied.ops() == {"Add", "FastGelu", "Identity"}
    applied.assert_equivalent()


def _factored_with_coefficient(value):
    model = V.gelu_tanh_factored()
    (a,) = [t for t in model.graph.initializer if t.name.endswith("/a")]
    a.CopyFrom(numpy_helper.from_array(np.array(value, np.float32), a.name))
    return model


NEAR_MISSES = {
    "tanh_coeff_off": (V.gelu_tanh_coeff_off, "tanh", "the cubic coefficient 0.044715 is [0.045162]"),
    "fp16_coeff_off": (lambda: fast_gelu_fp16(cubic=0.0452), "tanh", "the cubic coefficient 0.044715 is"),
    "x_xa_coeff_off": (lambda: fast_gelu_x_xa(cubic=0.0452), "tanh_factored",
                       "the cubic coefficient 0.044715 is [0.0452]"),
    # (x·x)·a with a off: the x·(x·a) alternative, tried first, must not hide the reason
    "factored_coeff_off": (lambda: _factored_with_coefficient(0.0452), "tanh_factored",
                           "the cubic coefficient 0.044715 is [0.0452]"),
}


@pytest.mark.parametrize("name", sorted(NEAR_MISSES))
def test_near_miss_refused_with_reason(name):
    build, variant, reason = NEAR_MISSES[name]
    applied = apply("FastGelu", build())
    assert not applied.rewrote and not applied.made
    (miss,) = applied.misses
    assert miss.fusion == "FastGelu" and miss.variant == variant and reason in miss.reason, miss
    applied.assert_equivalent()
