"""Scoring a trained network (floor 6), separate from training it.

Holds :mod:`~sast.evaluation.accuracy` (accuracy, NLL, firing rates and margins per spike mode;
the transfer gap; the robustness curve), :mod:`~sast.evaluation.calibration` (ECE, MCE, Brier,
reliability bins, temperature scaling), :mod:`~sast.evaluation.thresholds` (threshold
calibration for hard-spike deployment, fitted on validation),
:mod:`~sast.evaluation.attribution` (which LIF layer loses the accuracy) and
:mod:`~sast.evaluation.model` (:func:`~sast.evaluation.model.evaluate_model` for a network and
data of the user's own). Functions take a
model and data; none reads or writes a run folder (that is :mod:`sast.protocol`). May import
layers, models, neuron, surrogate, data and infra; never runs, training or above.
"""
