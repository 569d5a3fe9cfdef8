"""f-divergences: generators as sympy expressions (:mod:`klviz.fdiv.generators`) and their exact values for
any pair, with the Taylor approximation (:mod:`klviz.fdiv.divergence`)."""

from klviz.fdiv.divergence import GeneratorNumerics, f_divergence, taylor_approximation
from klviz.fdiv.generators import GENERATORS, Generator, get_generator, parse_expression

__all__ = ["Generator", "GENERATORS", "get_generator", "parse_expression", "f_divergence", "taylor_approximation"]
