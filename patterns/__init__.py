"""The pattern library, in two kinds, each in its own folder:

``canonical/``  exact rules, one per module, each exporting ``RULE`` (a ``Rule``). They run first,
                to a fixpoint (``engine.canonicalize``): each rewrites one exporter's spelling of the
                math into the form the fusions read, for every target, and fuses nothing.
``fusions/``    one module per fusion, each exporting ``FUSION``. They replace that form with fused
                ops in the form the target runs. FakeQuantize, QDQConstant and UnsignedActivation live
                here too: they normalize the quantization form, but only for some targets (QDQConstant
                for OpenVINO alone, UnsignedActivation for ONNX Runtime alone) and FakeQuantize's
                activation rounding may differ by a step at exact ties, so none is the exact,
                target-free rewrite a canonical rule must be.

Each module is named after what it exports (``HeadMergeAsEinsumDense`` in
``canonical/head_merge_as_einsum_dense.py``). To add a fusion or a rule, write its module and
list it below; to add a variant, edit its module.
"""
from .canonical import (dense_as_tensordot, dequantize_after_move, dequantized_as_matmul_integer,
                        gather_as_wrapped_gather, head_merge_as_einsum_dense, heads_as_einsum_dense,
                        matmul_as_einsum, matmul_as_flattened_batch, mean_as_global_average_pool, noop_cast,
                        qdq_as_qoperator, quantize_after_move, scores_as_transposed_product, slices_as_split,
                        softmax_as_transposed, sub_as_negated_product, transpose_as_pair, transpose_as_unit_axis)
from .fusions import (attention, bias_gelu, dynamic_quantized_linear, embed_layer_norm, fake_quantize, fast_gelu, gelu,
                      layer_norm, qdq_constant, quantized_attention, quantized_linear, quick_gelu, rotary_attention,
                      shared_quantizer, skip_layer_norm, unsigned_activation)

# Canonicalization rules, in the order they run where ``after`` leaves it open.
RULES = [noop_cast.RULE, mean_as_global_average_pool.RULE, sub_as_negated_product.RULE, dense_as_tensordot.RULE,
         heads_as_einsum_dense.RULE, matmul_as_einsum.RULE, matmul_as_flattened_batch.RULE,
         transpose_as_unit_axis.RULE, transpose_as_pair.RULE, head_merge_as_einsum_dense.RULE,
         softmax_as_transposed.RULE, scores_as_transposed_product.RULE, gather_as_wrapped_gather.RULE,
         slices_as_split.RULE, qdq_as_qoperator.RULE, dequantized_as_matmul_integer.RULE, dequantize_after_move.RULE,
         quantize_after_move.RULE]

# The order fusions run in, where ``Fusion.after`` leaves it open (``passes.order``), and the order reports list
# them in. Quantization forms are normalised first, then the largest fusions, then those that fold into them.
ALL = [fake_quantize.FUSION, qdq_constant.FUSION, rotary_attention.FUSION, attention.FUSION, quantized_attention.FUSION,
       unsigned_activation.FUSION, layer_norm.FUSION, gelu.FUSION, fast_gelu.FUSION, embed_layer_norm.FUSION,
       quantized_linear.FUSION, dynamic_quantized_linear.FUSION, quick_gelu.FUSION, skip_layer_norm.FUSION,
       bias_gelu.FUSION,
       shared_quantizer.FUSION]  # rewrites nothing: says why a quantizer stays standalone on OpenVINO
# Rules and fusions by name (``--disable`` takes either).
BY_NAME = {f.name: f for f in RULES + ALL}
