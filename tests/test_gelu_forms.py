"""A float16 constant in a GELU pattern: the value as float16 holds it, and not one step off.
The float16 GELU forms themselves are tested with their fusions (tests/fusions/test_gelu.py,
test_fast_gelu.py)."""
import math

import numpy as np
import pytest

from fusekit.engine.pattern import Const


@pytest.mark.parametrize("value, stored", [(math.sqrt(2), 1.4140625), (1 / math.sqrt(2), 0.70703125),
                                           (0.044715, 0.044708251953125)])
def test_a_float16_constant_is_the_value_as_float16_holds_it(value, stored):
    assert abs(stored - value) / value > 1e-4  # beyond the float32 tolerance: only its dtype excuses it
    assert Const(value=value).accepts(np.array(stored, np.float16))
    assert not Const(value=value).accepts(np.array(stored, np.float32))


def test_a_float16_constant_one_step_off_is_refused():
    step = np.spacing(np.float16(math.sqrt(2)))
    assert not Const(value=math.sqrt(2)).accepts(np.array(np.float16(math.sqrt(2)) + step, np.float16))
    assert not Const(value=0.5).accepts(np.array(0.505, np.float16))
