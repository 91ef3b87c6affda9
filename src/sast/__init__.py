"""sast — Sharpness-Aware Surrogate Training of spiking neural networks.

Train LIF networks with smooth surrogate spikes in the forward pass (optionally with SAM) and
deploy them with hard spikes.
"""

from sast.classifier import SpikingClassifier
from sast.config import RunConfig
from sast.evaluation.model import evaluate_model
from sast.interop.convert import ConvertedNet, convert
from sast.interop.nir import export_nir, to_nir
from sast.interop.nir_import import from_nir
from sast.layers import LIF, PerFrame, set_spike_mode, spike_mode
from sast.models import build_model
from sast.neuron import lif_scan, lif_scan_reference
from sast.optim import SAM, LookSAM
from sast.runs.load import load_run
from sast.surrogate import AtanSurrogate, ErfSurrogate, SigmoidSurrogate, Surrogate, get_surrogate
from sast.training.loop import fit
from sast.training.model import train_model

__version__ = "0.1.0"

__all__ = [
    "LIF", "SAM", "AtanSurrogate", "ConvertedNet", "ErfSurrogate", "LookSAM", "PerFrame",
    "RunConfig", "SigmoidSurrogate", "SpikingClassifier", "Surrogate", "build_model", "convert",
    "evaluate_model", "export_nir", "fit", "from_nir", "get_surrogate", "lif_scan",
    "lif_scan_reference", "load_run", "set_spike_mode", "spike_mode", "to_nir", "train_model",
]
