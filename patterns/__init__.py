"""The pattern library: one module per fusion, each exporting ``FUSION``.

To add a fusion, write a module here and list it below; to add a variant of an
existing fusion, edit its module.
"""
from . import (attention, bias_gelu, embed_layer_norm, fake_quantize, fast_gelu, gelu, layer_norm, qdq_constant,
               quantized_linear, quick_gelu, skip_layer_norm)

# The order fusions run in, where ``Fusion.after`` leaves it open (``passes.order``), and the order reports list
# them in. Quantization forms are normalised first, then the largest fusions, then those that fold into them.
ALL = [fake_quantize.FUSION, qdq_constant.FUSION, attention.FUSION, layer_norm.FUSION, gelu.FUSION, fast_gelu.FUSION,
       embed_layer_norm.FUSION, quantized_linear.FUSION, quick_gelu.FUSION, skip_layer_norm.FUSION, bias_gelu.FUSION]
BY_NAME = {f.name: f for f in ALL}
