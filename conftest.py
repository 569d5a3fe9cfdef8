"""Shared by every test, including the docstring examples in klviz/: figures are closed after each one
(matplotlib warns, and the warning is an error here, past 20 open figures)."""

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
