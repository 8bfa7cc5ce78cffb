"""Graph variants of LayerNorm and GELU, written from elementary ONNX ops the way
real exporters emit them.  These are the inputs for the fusion-pass tests.

Every builder returns an ``onnx.ModelProto`` with input ``x`` of shape
["batch", "seq", 16] and output ``y``.  Run ``python -m graphs.variants`` from tests/ to
check and execute every model with onnxruntime.
"""
from collections import Counter

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HIDDEN = 16
X_SHAPE = ["batch", "seq", HIDDEN]
F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16

BERT_EPS, KERAS_EPS = 1e-12, 1e-3
SQRT2, INV_SQRT2 = 1.4142135, 0.70710678
K_TANH, A_TANH = 0.7978845608, 0.044715      # sqrt(2/pi), cubic coefficient


class Graph:
    """Tiny graph builder: ``op`` appends a named node and returns its output name."""

    def __init__(self, name, opset=14):
        self.name, self.opset = name, opset
        self.nodes, self.inits, self.inputs, self.outputs = [], {}, [], []
        self._count = Counter()

    def input(self, name="x", shape=X_SHAPE, elem=F32):
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def output(self, name="y", shape=X_SHAPE, elem=F32):
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))

    def op(self, op_type, *inputs, out=None, **attrs):
        node_name = f"{self.name}/{op_type}_{self._count[op_type]}"
        self._count[op_type] += 1
        out = out or f"{node_name}_output_0"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=node_name, **attrs))
        return out

    def const(self, name, value, dtype=np.float32):
        """Initializer ``<graph>/<name>`` (0-d for scalars); same name + value is shared."""
        full, arr = f"{self.name}/{name}", np.asarray(value, dtype=dtype)
        if full in self.inits:
            assert np.array_equal(numpy_helper.to_array(self.inits[full]), arr), full
        else:
            self.inits[full] = numpy_helper.from_array(arr, full)
        return full

    def mean(self, t, axes=(-1,)):
        """ReduceMean(keepdims=1): axes attribute below opset 18, axes input from 18 on."""
        if self.opset >= 18:
            return self.op("ReduceMean", t, self.const("axes", list(axes), np.int64), keepdims=1)
        return self.op("ReduceMean", t, axes=list(axes), keepdims=1)

    def model(self):
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  initializer=list(self.inits.values()))
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                 ir_version=8 if self.opset <= 17 else 9,
                                 producer_name="fusekit.testmodels")


def _gamma_beta(dtype=np.float32, shape=(HIDDEN,), seed=0):
    rng = np.random.RandomState(seed)
    return ((1.0 + 0.1 * rng.randn(*shape)).astype(dtype),
            (0.1 * rng.randn(*shape)).astype(dtype))


def _io(name, opset=14, elem=F32):
    g = Graph(name, opset)
    g.output("y", elem=elem)
    return g, g.input("x", elem=elem)


# --------------------------------------------------------------------------- LayerNorm

def ln_pytorch(opset=14):
    """TorchScript exporter: (x-mean)/sqrt(mean((x-mean)^2)+eps) * gamma + beta."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS)))
    n = g.op("Div", d, std)
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_pytorch_opset18():
    return ln_pytorch(opset=18)


def ln_mul_square(opset=14):
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Mul", d, d))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS)))
    n = g.op("Div", d, std)
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_reciprocal(opset=14):
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    inv_std = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS))))
    n = g.op("Mul", d, inv_std)
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_sub_twice(opset=14):
    """x - mean computed twice: one Sub feeds Pow, the other feeds Div."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    mean = g.mean(x)
    d_var, d_out = g.op("Sub", x, mean), g.op("Sub", x, mean)
    var = g.mean(g.op("Pow", d_var, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS)))
    n = g.op("Div", d_out, std)
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_cast_fp16(opset=14):
    """Mixed precision: fp16 in/out, statistics and Div in fp32, affine part in fp16."""
    g, x = _io("ln", opset, elem=F16)
    gamma, beta = _gamma_beta(np.float16)
    x32 = g.op("Cast", x, to=F32)
    d = g.op("Sub", x32, g.mean(x32))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS)))
    n = g.op("Cast", g.op("Div", d, std), to=F16)
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma, np.float16)),
         g.const("beta", beta, np.float16), out="y")
    return g.model()


def ln_keras(opset=14):
    """TF/Keras: y = x*g + (beta - mean*g) with g = gamma / sqrt(var + eps)."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    mean = g.mean(x)
    d = g.op("Sub", x, mean)
    var = g.mean(g.op("Mul", d, d))
    r = g.op("Reciprocal", g.op("Sqrt", g.op("Add", var, g.const("eps", KERAS_EPS))))
    s = g.op("Mul", r, g.const("gamma", gamma))
    g.op("Add", g.op("Mul", x, s), g.op("Sub", g.const("beta", beta), g.op("Mul", mean, s)),
         out="y")
    return g.model()


def ln_no_gamma(opset=14):
    g, x = _io("ln", opset)
    _, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS)))
    g.op("Add", g.op("Div", d, std), g.const("beta", beta), out="y")
    return g.model()


def ln_no_beta(opset=14):
    g, x = _io("ln", opset)
    gamma, _ = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS)))
    g.op("Mul", g.op("Div", d, std), g.const("gamma", gamma), out="y")
    return g.model()


def ln_commuted(opset=14):
    """pytorch with every Add/Mul input order swapped."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", g.const("eps", BERT_EPS), var))
    n = g.op("Div", d, std)
    g.op("Add", g.const("beta", beta), g.op("Mul", g.const("gamma", gamma), n), out="y")
    return g.model()


# --------------------------------------------------------------------------- GELU

def _gelu_erf(g, x, sqrt2=SQRT2, half=0.5, erf_out=None, out="y"):
    """PyTorch TorchScript: x * (erf(x / sqrt2) + 1) * 0.5."""
    e = g.op("Erf", g.op("Div", x, g.const("sqrt2", sqrt2)), out=erf_out)
    return g.op("Mul", g.op("Mul", x, g.op("Add", e, g.const("one", 1.0))),
                g.const("half", half), out=out)


def _gelu_tanh_pow(g, x, a=A_TANH, out="y"):
    """0.5*x * (1 + tanh(k * (x + a*x^3)))."""
    cube = g.op("Pow", x, g.const("three", 3.0))
    inner = g.op("Mul", g.const("k", K_TANH), g.op("Add", x, g.op("Mul", g.const("a", a), cube)))
    return g.op("Mul", g.op("Mul", g.const("half", 0.5), x),
                g.op("Add", g.const("one", 1.0), g.op("Tanh", inner)), out=out)


def gelu_erf_div_half_after(opset=14):
    g, x = _io("gelu", opset)
    _gelu_erf(g, x)
    return g.model()


def gelu_erf_div_half_before(opset=14):
    g, x = _io("gelu", opset)
    e = g.op("Erf", g.op("Div", x, g.const("sqrt2", SQRT2)))
    g.op("Mul", g.op("Mul", x, g.const("half", 0.5)), g.op("Add", e, g.const("one", 1.0)),
         out="y")
    return g.model()


def gelu_erf_mul_tf(opset=14):
    """TF: x * ((erf(x * 1/sqrt2) + 1) * 0.5)."""
    g, x = _io("gelu", opset)
    e = g.op("Erf", g.op("Mul", x, g.const("inv_sqrt2", INV_SQRT2)))
    g.op("Mul", x, g.op("Mul", g.op("Add", e, g.const("one", 1.0)), g.const("half", 0.5)),
         out="y")
    return g.model()


def gelu_tanh_pow(opset=14):
    g, x = _io("gelu", opset)
    _gelu_tanh_pow(g, x)
    return g.model()


def gelu_tanh_mul3(opset=14):
    g, x = _io("gelu", opset)
    cube = g.op("Mul", g.op("Mul", x, x), x)
    inner = g.op("Mul", g.const("k", K_TANH),
                 g.op("Add", x, g.op("Mul", g.const("a", A_TANH), cube)))
    g.op("Mul", g.op("Mul", g.const("half", 0.5), x),
         g.op("Add", g.const("one", 1.0), g.op("Tanh", inner)), out="y")
    return g.model()


def gelu_tanh_factored(opset=14):
    """0.5*x * (1 + tanh(k*x * (1 + a*x^2)))."""
    g, x = _io("gelu", opset)
    poly = g.op("Add", g.op("Mul", g.op("Mul", x, x), g.const("a", A_TANH)), g.const("one", 1.0))
    t = g.op("Tanh", g.op("Mul", g.op("Mul", x, g.const("k", K_TANH)), poly))
    g.op("Mul", g.op("Mul", x, g.const("half", 0.5)), g.op("Add", t, g.const("one", 1.0)),
         out="y")
    return g.model()


def gelu_quick(opset=14):
    g, x = _io("gelu", opset)
    g.op("Mul", x, g.op("Sigmoid", g.op("Mul", x, g.const("alpha", 1.702))), out="y")
    return g.model()


def _bias(g, x, out_dim=32, seed=0):
    rng = np.random.RandomState(seed)
    w = (rng.randn(HIDDEN, out_dim) / np.sqrt(HIDDEN)).astype(np.float32)
    b = (0.1 * rng.randn(out_dim)).astype(np.float32)
    return g.op("Add", g.op("MatMul", x, g.const("W", w)), g.const("b", b))


def gelu_bias(opset=14):
    g = Graph("gelu", opset)
    g.output("y", ["batch", "seq", 32])
    _gelu_erf(g, _bias(g, g.input("x")))
    return g.model()


def gelu_bias_fast(opset=14):
    g = Graph("gelu", opset)
    g.output("y", ["batch", "seq", 32])
    _gelu_tanh_pow(g, _bias(g, g.input("x")))
    return g.model()


# --------------------------------------------------------------------------- near misses

def ln_eps_input(opset=14):
    """eps is a runtime graph input, not a constant."""
    g, x = _io("ln", opset)
    eps = g.input("eps", [])
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, eps)))
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_eps_vector(opset=14):
    """eps is a [16] vector (broadcasts var to [batch, seq, 16])."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    eps = g.const("eps", np.full(HIDDEN, BERT_EPS))
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, eps)))
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_eps_cast(opset=14):
    """eps is Cast(double constant -> float): a computed value, not a constant of its own."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    eps = g.op("Cast", g.const("eps64", BERT_EPS, np.float64), to=TensorProto.FLOAT)
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, eps)))
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_axis_not_last(opset=14):
    """Statistics over the seq axis (axes=[1]), not the hidden axis."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x, axes=(1,)))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)), axes=(1,))
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS))))
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_inner_used_elsewhere(opset=14):
    """The normalized value (Div output) also feeds the final Add: y = LN(x) + n."""
    g, x = _io("ln", opset)
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS))))
    ln = g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta))
    g.op("Add", ln, n, out="y")
    return g.model()


def ln_inner_graph_output(opset=14):
    """The Sqrt output is also graph output ``std``."""
    g, x = _io("ln", opset)
    g.output("std", ["batch", "seq", 1])
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    std = g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS)), out="std")
    n = g.op("Div", d, std)
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma)), g.const("beta", beta), out="y")
    return g.model()


def ln_gamma_wrong_shape(opset=14):
    """gamma is [1, 1, 1, 16]: one dimension more than the input, so the output has rank 4
    ([1, 16] or [1, 1, 16] would broadcast as [16] does)."""
    g = Graph("ln", opset)
    g.output("y", shape=[1] + X_SHAPE)
    x = g.input("x")
    gamma, beta = _gamma_beta()
    d = g.op("Sub", x, g.mean(x))
    var = g.mean(g.op("Pow", d, g.const("two", 2.0)))
    n = g.op("Div", d, g.op("Sqrt", g.op("Add", var, g.const("eps", BERT_EPS))))
    g.op("Add", g.op("Mul", n, g.const("gamma", gamma.reshape(1, 1, 1, HIDDEN))),
         g.const("beta", beta), out="y")
    return g.model()


def gelu_sqrt2_off(opset=14):
    g, x = _io("gelu", opset)
    _gelu_erf(g, x, sqrt2=SQRT2 * 1.01)
    return g.model()


def gelu_half_off(opset=14):
    g, x = _io("gelu", opset)
    _gelu_erf(g, x, half=0.505)
    return g.model()


def gelu_tanh_coeff_off(opset=14):
    g, x = _io("gelu", opset)
    _gelu_tanh_pow(g, x, a=A_TANH * 1.01)
    return g.model()


def gelu_inner_graph_output(opset=14):
    """The Erf output is also graph output ``erf``."""
    g, x = _io("gelu", opset)
    g.output("erf")
    _gelu_erf(g, x, erf_out="erf")
    return g.model()


def gelu_sigmoid_silu(opset=14):
    """SiLU x*sigmoid(x): alpha is 1, not QuickGelu's 1.702."""
    g, x = _io("gelu", opset)
    g.op("Mul", x, g.op("Sigmoid", x), out="y")
    return g.model()


LAYER_NORM = {
    "pytorch": ln_pytorch,
    "pytorch_opset18": ln_pytorch_opset18,
    "mul_square": ln_mul_square,
    "reciprocal": ln_reciprocal,
    "sub_twice": ln_sub_twice,
    "cast_fp16": ln_cast_fp16,
    "keras": ln_keras,
    "no_gamma": ln_no_gamma,
    "no_beta": ln_no_beta,
    "commuted": ln_commuted,
}

GELU = {
    "erf_div_half_after": gelu_erf_div_half_after,
    "erf_div_half_before": gelu_erf_div_half_before,
    "erf_mul_tf": gelu_erf_mul_tf,
    "tanh_pow": gelu_tanh_pow,
    "tanh_mul3": gelu_tanh_mul3,
    "tanh_factored": gelu_tanh_factored,
    "quick_gelu": gelu_quick,
    "bias_gelu": gelu_bias,
    "bias_fast_gelu": gelu_bias_fast,
}

NEAR_MISSES = {
    "ln_eps_input": ln_eps_input,
    "ln_eps_vector": ln_eps_vector,
    "ln_eps_cast": ln_eps_cast,
    "ln_axis_not_last": ln_axis_not_last,
    "ln_inner_used_elsewhere": ln_inner_used_elsewhere,
    "ln_inner_graph_output": ln_inner_graph_output,
    "ln_gamma_wrong_shape": ln_gamma_wrong_shape,
    "gelu_sqrt2_off": gelu_sqrt2_off,
    "gelu_half_off": gelu_half_off,
    "tanh_coeff_off": gelu_tanh_coeff_off,
    "gelu_inner_graph_output": gelu_inner_graph_output,
    "sigmoid_silu": gelu_sigmoid_silu,
}


# --------------------------------------------------------------------------- self-check

def random_feeds(model, batch=2, seq=5, seed=0):
    """Random inputs for every graph input (``eps`` gets the BERT epsilon)."""
    rng, feeds = np.random.RandomState(seed), {}
    np_type = {F32: np.float32, F16: np.float16}
    for vi in model.graph.input:
        t = vi.type.tensor_type
        shape = [{"batch": batch, "seq": seq}.get(d.dim_param, d.dim_value) for d in t.shape.dim]
        value = np.full(shape, BERT_EPS) if vi.name == "eps" else rng.randn(*shape)
        feeds[vi.name] = np.asarray(value, dtype=np_type[t.elem_type])
    return feeds


def _reference(name, model, x):
    """numpy reference for the LAYER_NORM / GELU variants (None if not applicable)."""
    from math import erf
    if name not in LAYER_NORM and name not in GELU:
        return None
    p = {i.name.split("/", 1)[1]: numpy_helper.to_array(i).astype(np.float64)
         for i in model.graph.initializer}
    x = x.astype(np.float64)
    if name in LAYER_NORM:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return ((x - mu) / np.sqrt(var + p["eps"]) * p.get("gamma", 1.0)
                + p.get("beta", 0.0))
    if name in ("bias_gelu", "bias_fast_gelu"):
        x = x @ p["W"] + p["b"]
    if name == "quick_gelu":
        return x / (1 + np.exp(-1.702 * x))
    if "tanh" in name or name == "bias_fast_gelu":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + A_TANH * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def main():
    import onnx
    import onnxruntime as ort

    for group in (LAYER_NORM, GELU, NEAR_MISSES):
        for name, build in group.items():
            model = build()
            onnx.checker.check_model(model, full_check=True)
            # ORT's own fusions off: run the graph exactly as written.  (With them on,
            # ORT 1.31 fuses `commuted` into LayerNormalization with its default
            # epsilon 1e-5 instead of 1e-12.)
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            sess = ort.InferenceSession(model.SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])
            feeds = random_feeds(model)
            y = sess.run(None, feeds)[0]
            assert np.isfinite(y).all(), name
            msg = f"OK  {name:26s} y{list(y.shape)} {y.dtype}"
            ref = _reference(name, model, feeds["x"])
            if ref is not None:
                err = float(np.abs(y - ref).max())
                assert err < (1e-2 if y.dtype == np.float16 else 1e-4), (name, err)
                msg += f"  max|y-ref|={err:.1e}"
            print(msg)


if __name__ == "__main__":
    main()
