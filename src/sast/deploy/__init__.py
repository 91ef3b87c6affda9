"""What leaves the training world: post-training quantisation, integer-only hard-spike
inference, and the cost of a deployed network in synaptic operations.

- :mod:`~sast.deploy.fixedpoint`: the saturating Q(I.F) membrane word, the rounding shift;
- :mod:`~sast.deploy.leak`: β as a fixed-point multiplier or a power-of-two shift;
- :mod:`~sast.quantise`: symmetric b-bit weights (per tensor or per output channel) and
  the integer rescale of a synaptic sum;
- :mod:`~sast.deploy.topology`: a trained network read as a chain of synaptic stages;
- :mod:`~sast.deploy.integer`: the quantised network and its int64 inference;
- :mod:`~sast.deploy.synops`: SynOps, dense MACs, firing rates;
- :mod:`~sast.protocol.deploy`: ``sast deploy``, ``deploy.json`` in a run folder.

The quantisation scheme, formats and rounding modes are this package's own choices (the
paper's quantisation details are not public).

Floor 7: may import :mod:`sast.quantise`, models, layers, neuron and the rooms below
them; never training or a run folder (``sast deploy`` on a run folder is
:mod:`sast.protocol.deploy`). The b-bit weight quantiser lives in :mod:`sast.quantise`,
re-exported here.
"""

from sast.deploy.fixedpoint import QFormat, round_shift
from sast.deploy.integer import IntegerNetwork, IntegerTrace, quantise_network
from sast.deploy.leak import LEAK_MODES, Leak
from sast.deploy.synops import count_synops, dense_macs, fanout, firing_rates
from sast.deploy.topology import Synapses, Topology, read_topology
from sast.quantise import GRANULARITIES, QuantisedWeight, quantise_weight, requantiser

__all__ = [
    "GRANULARITIES", "LEAK_MODES", "IntegerNetwork", "IntegerTrace", "Leak", "QFormat",
    "QuantisedWeight", "Synapses", "Topology", "count_synops", "dense_macs", "fanout",
    "firing_rates", "quantise_network", "quantise_weight", "read_topology", "requantiser",
    "round_shift",
]
