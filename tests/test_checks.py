"""klviz.checks: the exercise checks must fail wrong answers (saying where) and pass right ones."""

import math

import numpy as np
import pytest

from klviz import k2, k3
from klviz.checks import check_estimator, check_function


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_naive_k3_fails_and_says_where(dtype):
    result = check_estimator(lambda x: np.exp(x) - 1 - x, dtype=dtype)
    assert not result and "off by" in result.message and str(np.dtype(dtype)) in result.message
    assert abs(result.worst_at) < 1e-3  # near r = 1, where the naive formula cancels


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_klviz_estimators_pass(dtype):
    assert check_estimator(k3, dtype=dtype)
    assert check_estimator(k2, reference="k2", dtype=dtype)


def test_nan_wrong_dtype_wrong_shape_and_exceptions_are_reported():
    assert "NaN" in check_estimator(lambda x: np.where(x > 100, np.nan, k3(x))).message
    assert "returned float64, not float32" in check_estimator(lambda x: k3(x.astype(np.float64)), dtype=np.float32).message
    assert "shape" in check_estimator(lambda x: k3(x)[:-1]).message
    assert "raised ZeroDivisionError" in check_estimator(lambda x: 1 / 0).message
    with pytest.raises(TypeError, match="dtype must be a floating dtype"):
        check_estimator(k3, dtype=np.int64)


def test_check_function_against_a_formula_and_against_values():
    var_k3 = lambda mu: math.expm1(mu**2) - mu**2  # noqa: E731
    assert check_function(var_k3, var_k3, [0.1, 1.0, 2.0])
    wrong = check_function(lambda mu: math.expm1(mu**2), var_k3, [0.1, 1.0], name="μ")
    assert not wrong and "at μ = 0.1" in wrong.message
    assert check_function(lambda x: 2 * x, [2.0, 4.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="one value per point"):
        check_function(lambda x: x, [1.0], [1.0, 2.0])


def test_noise_reports_rounding_level_errors_as_a_bound():
    # 0.1 + 0.2 != 0.3 in float64: a relative error of about 1.9e-16; a pass states the tolerance, not that ...
    exact = check_function(lambda x: x + 0.2, lambda x: 0.3, [0.1])
    assert exact and exact.message == "within 1e-09 relative at all 1 points"
    assert exact.worst_error == pytest.approx(abs((0.1 + 0.2) - 0.3) / 0.3)
    # ... and, with noise, as the bound: the saved text no longer depends on the last bit
    bounded = check_function(lambda x: x + 0.2, lambda x: 0.3, [0.1], noise=1e-12)
    assert bounded.message == "within 1e-12 relative at all 1 points"
    assert bounded.worst_error == exact.worst_error  # the number itself is kept
    # an error above the noise level gives the tolerance again, and a failure is unaffected
    assert check_function(lambda x: x * (1 + 1e-10), lambda x: x, [1.0], noise=1e-12).message.startswith("within 1e-09")
    assert "off by" in check_function(lambda x: 2 * x, lambda x: x, [1.0], noise=1e-12).message
    assert check_estimator(k3, dtype=np.float32, noise=1e-3).message.startswith("within 0.001 relative of k3")
    for bad in (0.0, -1e-12, math.inf, "1e-12", True):
        with pytest.raises(ValueError, match="noise must be a positive finite number or None"):
            check_function(lambda x: x, lambda x: x, [1.0], noise=bad)
        with pytest.raises(ValueError, match="noise must be a positive finite number or None"):
            check_estimator(k3, noise=bad)
