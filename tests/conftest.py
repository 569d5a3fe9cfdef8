import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


@pytest.fixture
def rng():
    """A seeded generator: every Monte Carlo test is reproducible."""
    return np.random.default_rng(20201107)


class GivenUniforms(np.random.Generator):
    """A Generator whose ``random`` returns the given uniforms, in order: inverse-CDF draws on demand."""

    def __init__(self, uniforms):
        super().__init__(np.random.PCG64(0))
        self._uniforms = list(uniforms)

    def random(self, size=None, dtype=np.float64, out=None):
        size = 1 if size is None else size
        values, self._uniforms = self._uniforms[:size], self._uniforms[size:]
        return np.array(values, dtype=np.float64)


def pytest_collection_modifyitems(config, items):
    """Markers by location: nbval items are ``notebooks``, tests/browser ``browser`` (the fast suite is
    ``pytest -n 2 -m "not notebooks and not browser"``)."""
    for item in items:
        path = str(item.path)
        if path.endswith(".ipynb"):
            item.add_marker(pytest.mark.notebooks)
        elif "/tests/browser/" in path:
            item.add_marker(pytest.mark.browser)
