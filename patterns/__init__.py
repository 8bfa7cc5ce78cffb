"""The pattern library: one module per fusion, each exporting ``FUSION``, and one per
canonicalization rule (``canon_*.py``), each exporting ``RULE``.

Rules run first, to a fixpoint (``engine.canonicalize``): each rewrites one exporter's
spelling of the math into the form the fusions read, exactly, and fuses nothing.
Fusions then replace that form with fused ops.

To add a fusion, write a module here and list it in ``ALL``; to add a variant of an
existing fusion, edit its module. To add a rule, write a ``canon_`` module and list it
in ``RULES``.
"""
from . import (attention, bias_gelu, canon_batched_matmul, canon_einsum_dense, canon_einsum_projection,
               canon_global_average_pool, canon_head_merge, canon_index_wrap, canon_negated_product, canon_noop_cast, canon_tensordot,
               canon_transpose_pair, canon_transposed_scores,
               canon_unit_axis, embed_layer_norm, fake_quantize, fast_gelu, gelu, layer_norm,
               qdq_constant, quantized_linear, quick_gelu, skip_layer_norm)

# Canonicalization rules, in the order they run where ``after`` leaves it open.
RULES = [canon_noop_cast.RULE, canon_global_average_pool.RULE, canon_negated_product.RULE, canon_tensordot.RULE,
         canon_einsum_dense.RULE, canon_einsum_projection.RULE, canon_batched_matmul.RULE,
         canon_unit_axis.RULE, canon_transpose_pair.RULE, canon_head_merge.RULE,
         canon_transposed_scores.RULE, canon_index_wrap.RULE]

# The order fusions run in, where ``Fusion.after`` leaves it open (``passes.order``), and the order reports list
# them in. Quantization forms are normalised first, then the largest fusions, then those that fold into them.
ALL = [fake_quantize.FUSION, qdq_constant.FUSION, attention.FUSION, layer_norm.FUSION, gelu.FUSION, fast_gelu.FUSION,
       embed_layer_norm.FUSION, quantized_linear.FUSION, quick_gelu.FUSION, skip_layer_norm.FUSION, bias_gelu.FUSION]
# Rules and fusions by name (``--disable`` takes either).
BY_NAME = {f.name: f for f in RULES + ALL}
