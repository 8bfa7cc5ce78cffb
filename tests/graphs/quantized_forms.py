"""LayerNorm, the residual sum before it and the attention core as quantizers write them: a
QuantizeLinear→DequantizeLinear pair on the values inside (ONNX Runtime's ``quantize_static``
with every op type quantized), γ and β stored as integers, ε rounded through a pair. The
inputs of the quantized-form tests of the LayerNorm, SkipLayerNorm and QuantizedAttention
fusions; ``x`` [batch, seq, 16] float, output ``y``.
"""
import numpy as np
from onnx import TensorProto, helper

from .attention import HEADS, HIDDEN, SIZE, _key_mask
from .variants import Graph, _gamma_beta


class _Pairs:
    """Q→DQ pairs of one graph, each value with a scale of its own (uint8, zero point 128)."""

    def __init__(self, g, per_channel=None):
        self.g, self.count, self.per_channel = g, 0, per_channel

    def __call__(self, t, scale=0.02, zero=128, per_channel=False, columns=HIDDEN):
        g, self.count = self.g, self.count + 1
        if per_channel:  # one scale per column of the last axis
            s = g.const(f"pc_scale{self.count}", np.full(columns, scale, np.float32))
            z = g.const(f"pc_zero{self.count}", np.full(columns, zero, np.uint8), np.uint8)
            return g.op("DequantizeLinear", g.op("QuantizeLinear", t, s, z, axis=-1), s, z, axis=-1)
        s, z = g.const(f"scale{self.count}", scale), g.const(f"zero{self.count}", zero, np.uint8)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", t, s, z), s, z)

    def constant(self, name, value):
        """A scalar constant rounded through its own pair, a step fine enough to keep it."""
        g = self.g
        s, z = g.const(f"{name}_scale", abs(value) / 255 or 1.0), g.const(f"{name}_zero", 0, np.uint8)
        return g.op("DequantizeLinear", g.op("QuantizeLinear", g.const(name, value), s, z), s, z)

    def stored(self, name, value):
        """A vector stored as uint8 and dequantized (the quantizer's γ and β)."""
        g = self.g
        lo, hi = min(value.min(), 0.0), max(value.max(), 0.0)
        scale = np.float32((hi - lo) / 255)
        zero = np.uint8(round(-lo / scale))
        q = np.clip(np.round(value / scale) + zero, 0, 255).astype(np.uint8)
        return g.op("DequantizeLinear", g.const(f"{name}_q", q, np.uint8), g.const(f"{name}_scale", scale),
                    g.const(f"{name}_zero", zero, np.uint8))


def ln_all_ops(opset=17, eps_pair=True, stored=True, per_channel=False, read_inside=False):
    """x ─⟨q⟩─► LayerNorm with a pair on the variance, ε + variance, the normalized value and its
    product with γ ─⟨q⟩─► y. ``stored``: γ, β as uint8 through a DQ; ``eps_pair``: ε through a
    pair. Near misses: ``per_channel`` (the pair on the normalized value per channel),
    ``read_inside`` (the normalized value's quantized integers also a graph output)."""
    g = Graph("ln_all_ops", opset)
    g.output("y")
    pair = _Pairs(g)
    x = pair(g.input("x"), 0.05)
    gamma, beta = _gamma_beta()
    mean = g.mean(x)
    d = g.op("Sub", x, mean)
    var = pair(g.mean(g.op("Pow", d, g.const("two", 2.0))), 0.01, 0)
    eps = pair.constant("eps", 1e-12) if eps_pair else g.const("eps", 1e-12)
    std = g.op("Sqrt", pair(g.op("Add", var, eps), 0.01, 0))
    normalized = g.op("Div", d, std)
    if read_inside:
        s, z = g.const("n_scale", 0.02), g.const("n_zero", 128, np.uint8)
        q = g.op("QuantizeLinear", normalized, s, z, out="normalized_q")
        g.outputs.append(helper.make_tensor_value_info(q, TensorProto.UINT8, ["batch", "seq", HIDDEN]))
        normalized = g.op("DequantizeLinear", q, s, z)
    else:
        normalized = pair(normalized, 0.03, per_channel=per_channel)
    g_value = pair.stored("gamma", gamma) if stored else g.const("gamma", gamma)
    b_value = pair.stored("beta", beta) if stored else g.const("beta", beta)
    scaled = pair(g.op("Mul", normalized, g_value), 0.03)
    g.op("Identity", pair(g.op("Add", scaled, b_value), 0.03), out="y")
    return g.model()


def skip_ln_all_ops(opset=17, per_channel=False):
    """DQ(Q(a)) + DQ(Q(skip)) ─⟨q⟩─► LayerNormalization ─⟨q⟩─► y: the residual sum an all-ops
    quantizer rounds before the LayerNorm (fused already). ``per_channel``: that pair per channel."""
    g = Graph("skip_ln_all_ops", opset)
    g.output("y")
    pair = _Pairs(g)
    total = pair(g.op("Add", pair(g.input("x"), 0.05), pair(g.input("skip"), 0.05)), 0.08,
                 per_channel=per_channel)
    gamma, beta = _gamma_beta()
    y = g.op("LayerNormalization", total, g.const("gamma", gamma), g.const("beta", beta), axis=-1, epsilon=1e-12)
    g.op("Identity", pair(y, 0.03), out="y")
    return g.model()


def _dynamic_pair(g, foreign_scale=False):
    """DQ(DynamicQuantizeLinear(t)): ``quantize_dynamic``'s run-time rounding, as DequantizedAsMatMulInteger
    reads it. ``foreign_scale``: the DQ takes another constant scale, not its quantizer's."""
    def pair(t, *_, **__):
        q, s, z = (f"{t}_{n}" for n in ("q", "s", "z"))
        g.nodes.append(helper.make_node("DynamicQuantizeLinear", [t], [q, s, z], name=f"{t}_quantize"))
        return g.op("DequantizeLinear", q, g.const("foreign_scale", 0.05) if foreign_scale else s, z)
    return pair


def attention_qdq(form="all_ops", per_channel=False, read_inside=False, opset=14, output_pair=None,
                  foreign_scale=False, nan_guard=False, nan_mask=False):
    """One self-attention layer between quantized projections: Q, K, V = DQ(Q(x·W + b)), the
    core ⟨q⟩ on every value (``all_ops``), on the inputs and outputs of Q·Kᵀ and P·V only
    (``matmul_only``), or nowhere with the projections a QAT export's DQ(Q(x)) · DQ(Q(W)) + b
    (``qat``); ``nncf_sdpa``: NNCF on an sdpa export, √scale on Q and on Kᵀ each through a pair,
    the NaN guard after the Softmax, pairs on V and the probabilities; ``nncf_default``: as
    ``matmul_only``, but P·V's integers go through the head merge and are dequantized after it (NNCF's
    default preset, canonicalized by DequantizeAfterMove), no output pair; ``dynamic``: ``quantize_dynamic``
    with the attention's MatMuls quantized (Optimum's avx512_vnni), DQ(DynamicQuantizeLinear(·)) on the
    projections' input and the operands of Q·Kᵀ and P·V; ``float``: no pair at all (the Attention fusion's, not this one's). Near misses:
    ``foreign_scale`` (dynamic: the probabilities dequantized with a constant scale, not their quantizer's),
    ``nan_guard`` (dynamic: an sdpa export's −inf mask fill and Where(IsNaN(p), 0, p) after the Softmax),
    ``per_channel`` (the pair on the probabilities' ·V per channel), ``read_inside`` (the
    quantized scores also a graph output), ``nan_mask`` (the mask through a pair of scale inf, as
    NNCF's default preset calibrates it on the −3.4e38 fill: NaN at every key). ``output_pair``: the merged
    output through a pair (the next block's input quantizer; by default where the core has pairs)."""
    g = Graph(f"attention_{form}", opset)
    x = g.input("x", ["batch", "seq", HIDDEN])
    g.input("attention_mask", ["batch", "seq"], TensorProto.INT64)
    g.output("y", ["batch", "seq", HIDDEN])
    pair = _Pairs(g)
    inner = pair if form == "all_ops" else (lambda t, *a, **k: t)
    around = pair if form in ("all_ops", "matmul_only", "nncf_default") else (lambda t, *a, **k: t)
    if form == "dynamic":
        around = _dynamic_pair(g)
    rng = np.random.default_rng(0)
    xq = pair(x, 0.05) if form == "qat" else around(x) if form == "dynamic" else x

    def projection(name):
        w = rng.normal(0, 0.3, (HIDDEN, HIDDEN)).astype(np.float32)
        if form == "qat":  # the float [out, in] weight through its own pair, then transposed
            s, z = g.const(f"{name}_w_scale", np.abs(w).max() / 127), g.const(f"{name}_w_zero", 0, np.int8)
            w = g.op("Transpose", g.op("DequantizeLinear", g.op("QuantizeLinear", g.const(f"{name}_w", w.T), s, z),
                                       s, z), perm=[1, 0])
        else:
            w = g.const(f"{name}_w", w)
        y = g.op("Add", g.op("MatMul", xq, w), g.const(f"{name}_b", rng.normal(0, 0.1, HIDDEN)))
        return pair(y, 0.05) if form in ("all_ops", "matmul_only", "nncf_default") else y

    def heads(t, perm):
        split = inner(g.op("Reshape", t, g.const("split", [0, 0, HEADS, SIZE], np.int64)), 0.05)
        return g.op("Transpose", split, perm=perm)
    if form == "nncf_sdpa":
        root = g.const("sqrt_scale", np.sqrt(1 / np.sqrt(SIZE)))
        q = pair(g.op("Mul", heads(projection("q"), [0, 2, 1, 3]), root), 0.05)
        k_t = pair(g.op("Mul", heads(projection("k"), [0, 2, 3, 1]), root), 0.05)
        v = heads(pair(projection("v"), 0.05), [0, 2, 1, 3])
        padded = g.op("Sub", g.const("one_f", 1.0), _key_mask(g, True))
        scores = g.op("Add", g.op("MatMul", q, k_t), g.op("Mul", padded, g.const("fill", -10000.0)))
        probs = g.op("Softmax", scores, axis=-1)
        probs = pair(g.op("Where", g.op("IsNaN", probs), g.const("nan_zero", 0.0), probs), 1 / 255, 0)
        merged = g.op("Transpose", g.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        g.op("Identity", pair(g.op("Reshape", merged, g.const("merge", [0, 0, HIDDEN], np.int64)), 0.05), out="y")
        return g.model()
    q = around(heads(projection("q"), [0, 2, 1, 3]), 0.05)
    k_t = around(heads(projection("k"), [0, 2, 3, 1]), 0.05)
    v = around(heads(projection("v"), [0, 2, 1, 3]), 0.05)
    product = g.op("MatMul", q, k_t)
    if read_inside:
        s, z = g.const("scores_scale", 0.1), g.const("scores_zero", 128, np.uint8)
        quantized = g.op("QuantizeLinear", product, s, z, out="scores_q")
        g.outputs.append(helper.make_tensor_value_info(quantized, TensorProto.UINT8, ["batch", HEADS, "seq", "seq"]))
        product = g.op("DequantizeLinear", quantized, s, z)
    else:
        product = inner(product, 0.2)
    scale = pair.constant("scale", 1 / np.sqrt(SIZE)) if form == "all_ops" else g.const("scale", 1 / np.sqrt(SIZE))
    scores = inner(g.op("Mul", product, scale), 0.1)
    # a pair on the masked sum would round the scores to the fill's step (as the all-ops model's
    # does: its calibration sees −3.4e38): left out here, so that the comparison measures the rest
    if nan_guard:  # a fully masked row is all −inf: its softmax NaN, zeroed by the guard
        masked = g.op("Add", scores, g.op("Where", g.op("Cast", _key_mask(g, False), to=TensorProto.BOOL),
                                          g.const("kept", 0.0), g.const("fill", -np.inf)))
        probs = g.op("Softmax", masked, axis=-1)
        probs = g.op("Where", g.op("IsNaN", probs), g.const("nan_zero", 0.0), probs)
    else:
        padded = g.op("Sub", g.const("one_f", 1.0), _key_mask(g, True))
        mask = g.op("Mul", padded, g.const("fill", -10000.0))
        if nan_mask:
            s, z = g.const("mask_scale", np.inf), g.const("mask_zero", -128, np.int8)
            mask = g.op("DequantizeLinear", g.op("QuantizeLinear", mask, s, z), s, z)
        probs = g.op("Softmax", g.op("Add", scores, mask), axis=-1)
    probs = (_dynamic_pair(g, foreign_scale) if form == "dynamic" else around)(probs, 1 / 255, 0)
    if form == "nncf_default":
        s, z = g.const("context_scale", 0.05), g.const("context_zero", 128, np.uint8)
        moved = g.op("Transpose", g.op("QuantizeLinear", g.op("MatMul", probs, v), s, z), perm=[0, 2, 1, 3])
        merged = g.op("Reshape", moved, g.const("merge", [0, 0, HIDDEN], np.int64))
        g.op("DequantizeLinear", merged, s, z, out="y")
        return g.model()
    context = g.op("MatMul", probs, v)
    context = context if form == "dynamic" else around(context, 0.05)
    merged = inner(g.op("Transpose", context, perm=[0, 2, 1, 3]), 0.05, per_channel=per_channel, columns=SIZE)
    y = g.op("Reshape", merged, g.const("merge", [0, 0, HIDDEN], np.int64))
    output_pair = form in ("all_ops", "matmul_only") if output_pair is None else output_pair
    g.op("Identity", pair(y, 0.05) if output_pair else y, out="y")
    return g.model()
