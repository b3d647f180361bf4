import numpy as np
import pytest

import slb_keras
from slb_keras.core import value_sets


@pytest.mark.parametrize("bits", range(1, 9))
def test_value_set_matches_formula(bits):
    m = 2**bits
    v = slb_keras.value_set(bits)
    assert v.dtype == np.float32 and v.shape == (m,)
    expected = np.array([(2 * k - (m - 1)) / (m - 1) for k in range(m)], np.float32)
    np.testing.assert_allclose(v, expected, rtol=2e-7, atol=0)  # <= 1 ulp
    assert v[0] == -1.0 and v[-1] == 1.0 and np.all(np.diff(v) > 0)
    assert not np.any(v == 0)


def test_two_bit_values():
    np.testing.assert_allclose(slb_keras.value_set(2), [-1, -1 / 3, 1 / 3, 1], rtol=1e-7)


@pytest.mark.parametrize("bits", [1, 2, 3, 7, 8])
def test_integer_values_are_odd_and_exact(bits):
    m = 2**bits
    q = slb_keras.integer_values(bits)
    assert np.all(q % 2 == 1) and q.min() == -(m - 1) and q.max() == m - 1
    # The int8 view with scale 1/(m-1) reproduces V exactly in float32.
    np.testing.assert_array_equal(
        q.astype(np.float32) * np.float32(1.0 / (m - 1)), slb_keras.value_set(bits)
    )


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_codes_round_trip(bits):
    codes = np.arange(2**bits)
    values = slb_keras.codes_to_values(codes, bits)
    np.testing.assert_array_equal(slb_keras.values_to_codes(values, bits), codes)


def test_values_to_codes_projects_to_nearest_and_clips():
    np.testing.assert_array_equal(
        slb_keras.values_to_codes([-5.0, -0.5, 0.1, 0.4, 7.0], 2), [0, 1, 2, 2, 3]
    )


def test_codes_out_of_range():
    with pytest.raises(ValueError, match=r"codes.*\[0, 3\]"):
        slb_keras.codes_to_values([4], 2)


@pytest.mark.parametrize("bad", [0, 9, 2.5, "two", None, True, -1])
def test_bad_bits(bad):
    with pytest.raises(ValueError, match=r"Invalid bits=.*integer from 1 to 8"):
        slb_keras.value_set(bad)


def test_validate_bits_accepts_integral_float_and_extras():
    assert value_sets.validate_bits(3.0) == 3
    assert value_sets.validate_bits(32, extra=(32,)) == 32
