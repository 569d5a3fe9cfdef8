"""klviz._kernels.log_softmax against scipy: the same arithmetic as ``shifted - scipy.special.logsumexp(shifted)``,
so the same bits, on rows with ties, -inf, huge and tiny logits, along any axis."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import logsumexp

from klviz._kernels import log_softmax


def scipy_log_softmax(logits, axis=-1):
    logits = np.asarray(logits, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - logsumexp(shifted, axis=axis, keepdims=True)


values = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([0.0, 1.0, -1.0, 700.0, -745.0, 1e300, -1e300, -np.inf]),
                   st.floats(-1e-300, 1e-300))


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=7), elements=values),
       st.integers(0, 2))
def test_bit_for_bit_the_scipy_arithmetic(logits, axis):
    axis = axis % logits.ndim
    finite = np.isfinite(logits).any(axis=axis, keepdims=True)
    logits = np.where(finite, logits, 0.0)  # every slice needs one finite logit
    np.testing.assert_array_equal(log_softmax(logits, axis=axis), scipy_log_softmax(logits, axis=axis))


@pytest.mark.parametrize("row", [[0.0, 0.0], [3.0, 3.0, 3.0, -np.inf], [1e300, -1e300], [1e308, -1e308, 1e308],
                                 [0.0, -800.0], [2.5]])
def test_rows_with_ties_and_extremes(row):
    got = log_softmax(np.array(row))
    np.testing.assert_array_equal(got, scipy_log_softmax(np.array(row)))
    assert np.isclose(np.sum(np.exp(got)), 1.0, rtol=1e-15)
