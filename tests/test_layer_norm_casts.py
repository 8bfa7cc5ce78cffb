"""LayerNorm with Casts where ONNX Runtime's fusion tests put them (tests/graphs/forms.py)."""
import pytest

from conftest import fuse_only
from fusekit.verify import verify
from graphs import forms as F


@pytest.mark.parametrize("placement", ["pow_exponent", "before_scale"])
def test_layer_norm_with_casts_fuses_as_ort_expects(placement):
    model = F.layer_norm_with_cast(placement)
    fused, report = fuse_only(model, "LayerNorm")
    assert report.counts == {"LayerNorm": 1}, report.summary()
    assert verify(model, fused).ok


def test_the_cast_forms_run_as_built():
    for placement in ("pow_exponent", "before_scale"):
        model = F.layer_norm_with_cast(placement)
        assert verify(model, model).ok
