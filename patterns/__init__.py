"""The pattern library: one module per fusion, each exporting ``FUSION``.

To add a fusion, write a module here and list it below; to add a variant of an
existing fusion, edit its module.
"""
from . import (attention, bias_gelu, embed_layer_norm, fake_quantize, fast_gelu, gelu, layer_norm, qdq_constant,
               quantized_linear, quick_gelu, skip_layer_norm)

ALL = [attention.FUSION, layer_norm.FUSION, gelu.FUSION, fast_gelu.FUSION, quick_gelu.FUSION, bias_gelu.FUSION,
       skip_layer_norm.FUSION, embed_layer_norm.FUSION, quantized_linear.FUSION,
       qdq_constant.FUSION, fake_quantize.FUSION]
BY_NAME = {f.name: f for f in ALL}
