"""What leaves the training world: post-training quantisation, integer-only hard-spike
inference, and the cost of a deployed network in synaptic operations.

- :mod:`~sast.deploy.fixedpoint`: the saturating Q(I.F) membrane word, the rounding shift;
- :mod:`~sast.deploy.leak`: β as a fixed-point multiplier or a power-of-two shift;
- :mod:`~sast.deploy.quantise`: symmetric b-bit weights (per tensor or per output channel) and
  the integer rescale of a synaptic sum.

The quantisation scheme, formats and rounding modes are this package's own choices (the
paper's quantisation details are not public).
"""

from sast.deploy.fixedpoint import QFormat, round_shift
from sast.deploy.leak import LEAK_MODES, Leak
from sast.deploy.quantise import GRANULARITIES, QuantisedWeight, quantise_weight, requantiser

__all__ = [
    "GRANULARITIES", "LEAK_MODES", "Leak", "QFormat", "QuantisedWeight", "quantise_weight",
    "requantiser", "round_shift",
]
