"""Distribution pairs: q (what we sample from) and p (the target). Each kind owns its exact computation.

* :class:`GaussianPair` — closed forms (:mod:`klviz.pairs.gaussian`);
* :class:`ScipyPair` — any two frozen scipy.stats distributions, quadrature (:mod:`klviz.pairs.continuous`);
* :class:`CategoricalPair` — two softmax distributions over a vocabulary, sums (:mod:`klviz.pairs.categorical`);
* :class:`MarkovChainPair` — two Markov chains over sequences, dynamic programmes (:mod:`klviz.pairs.markov`).

The protocol they share is :class:`~klviz.pairs.base.Pair` (:mod:`klviz.pairs.base`).
"""

from klviz._kernels import log_softmax
from klviz.pairs.base import Pair
from klviz.pairs.categorical import CategoricalPair
from klviz.pairs.continuous import ScipyPair
from klviz.pairs.gaussian import GaussianPair
from klviz.pairs.markov import MarkovChainPair

__all__ = ["Pair", "GaussianPair", "ScipyPair", "CategoricalPair", "MarkovChainPair", "log_softmax"]
