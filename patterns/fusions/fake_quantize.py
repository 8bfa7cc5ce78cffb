"""OpenVINO's FakeQuantize op, rewritten as the QuantizeLinear→DequantizeLinear pair it stands for.

    x ─► FakeQuantize(lo, hi, lo, hi, levels=256) ─► y
      ⇒  x ─► QuantizeLinear(s, zp) ─► DequantizeLinear(s, zp) ─► y          (an activation)
      ⇒  W_q ─► DequantizeLinear(s, zp) ─► y                                  (a constant weight)

    s = (hi − lo) / (levels − 1),   zp = −lo / s

openvino — NNCF / Model Optimizer FakeQuantize in the ``org.openvinotoolkit`` domain,
which OpenVINO's ONNX reader accepts and nothing else runs.

With the pair, ONNX Runtime can run the model at all, and the INT8 block fusion
(``quantized_linear``) reads one quantization form. The pair is only written where it
stands for the same grid: equal input and output ranges, a zero that falls on a grid
point (zp an integer), and for an activation 256 levels (a Q's 8-bit range; 255
levels are accepted for constants, whose integers are computed here). A weight's
integers are computed as FakeQuantize computes them (round half to even); an
activation rounds ``x/s + zp`` where FakeQuantize rounds ``(x − lo)/s``, the same
value but for float rounding at exact ties — at most one step, within the INT8
verification tolerance.
"""
import numpy as np

from fusekit.engine.pattern import Const, Fusion, Var, Variant, op

OV = "org.openvinotoolkit"
ZERO_TOLERANCE = 1e-3  # of a step: how close −lo/s must be to an integer


def _fake_quantize(data):
    return op.FakeQuantize(data, Const("in_low", label="the input low"), Const("in_high", label="the input high"),
                           Const("out_low", label="the output low"), Const("out_high", label="the output high"),
                           _domain=OV, _bind="fq")


def _grid(m):
    """(scale, zero point as float, levels) of the FakeQuantize, or a reason."""
    lo, hi = (np.asarray(m.const(k), np.float64) for k in ("in_low", "in_high"))
    if not (np.array_equal(lo, m.const("out_low")) and np.array_equal(hi, m.const("out_high"))):
        return "the output range differs from the input range (a rescaling, not a rounding)"
    levels = m.node("fq").attrs.get("levels", 256)
    if levels not in (255, 256):
        return f"{levels} levels, not an 8-bit grid"
    lo, hi = np.broadcast_arrays(lo, hi)
    if np.any(hi <= lo):
        return "an empty range (high ≤ low)"
    scale = (hi - lo) / (levels - 1)
    zero = -lo / scale
    if np.any(np.abs(zero - np.round(zero)) > ZERO_TOLERANCE) or np.any(zero < 0) or np.any(zero > levels - 1):
        return "zero is not on the quantization grid (no integer zero point)"
    if sum(d > 1 for d in scale.shape) > 1:
        return f"ranges of shape {list(scale.shape)}: per-channel along more than one axis"
    return scale, np.round(zero), levels


def check(m) -> str | None:
    grid = _grid(m)
    if isinstance(grid, str):
        return grid
    scale, _, levels = grid
    if scale.size > 1 and m.state.opset < 13:
        return f"per-channel ranges need a per-axis QuantizeLinear (opset 13), the model has opset {m.state.opset}"
    if m.variant.name == "activation" and levels != 256:
        return "255 levels on an activation: QuantizeLinear's 8-bit range has 256"
    return None


def _per_axis(values: np.ndarray, shape) -> tuple[np.ndarray, dict]:
    """A 1-D parameter and its ``axis`` attribute (none for a per-tensor one)."""
    if values.size == 1:
        return values.reshape(()), {}
    axis = next(i for i, d in enumerate(shape) if d > 1) - len(shape)
    return values.reshape(-1), {"axis": axis}


def rewrite(m, _, emit):
    scale, zero, levels = _grid(m)
    shape = scale.shape
    step, axis = _per_axis(scale.astype(np.float32), shape)
    if m.variant.name == "weight":  # the integers FakeQuantize rounds the weight to, stored as int8
        w = np.asarray(m.const("w"), np.float64)
        lo = -zero * scale
        q = np.clip(np.round((w - lo) / scale), 0, levels - 1)
        offset = 128 if levels == 256 else 127  # int8: the zero point of a symmetric range is 0
        w_q = (q - offset).astype(np.int8)
        zp, _ = _per_axis((zero - offset).astype(np.int8), shape)
        return emit.DequantizeLinear(emit.const("weight_quantized", w_q), emit.const("scale", step),
                                     emit.const("zero_point", zp), **axis)
    zp, _ = _per_axis(zero.astype(np.uint8), shape)
    s, z = emit.const("scale", step), emit.const("zero_point", zp)
    return emit.DequantizeLinear(emit.QuantizeLinear(m["x"], s, z, **axis), s, z, **axis)


FUSION = Fusion(
    name="FakeQuantize",
    variants=[
        Variant("weight", _fake_quantize(Const("w", label="the weight")), "a FakeQuantize on a constant (NNCF)"),
        Variant("activation", _fake_quantize(Var("x", "the input")), "a FakeQuantize on an activation (NNCF)"),
    ],
    check=check,
    rewrite=rewrite,
    signature=frozenset({"FakeQuantize"}),
)
