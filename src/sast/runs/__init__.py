"""Run folders and what lives in them (floor 6).

Holds :mod:`~sast.runs.folder` (the files of a run folder, checkpoints, the environment
record), :mod:`~sast.runs.results` (the header every result file starts with; training cost
from the metrics log), :mod:`~sast.runs.splits` (the train / validation / test parts of a
run, disjoint and recorded) and :mod:`~sast.runs.load` (the model of a config, and a finished
run folder loaded back: :func:`~sast.runs.load.load_run`). May import :mod:`sast.config` and the
rooms below it (models, layers, data, quantise, infra); never training, evaluation or above.
"""
