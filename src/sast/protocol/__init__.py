"""Run-level protocols (floor 8): what ``sast evaluate``, ``sast deploy`` and ``sast export``
do to a run folder. :mod:`~sast.protocol.evaluate` writes ``evaluation.json``,
``robustness.json``, ``diagnostics.json`` and ``attribution.json``;
:mod:`~sast.protocol.deploy` writes ``deploy.json``; :mod:`~sast.protocol.export` writes a NIR
file. Each loads the run (:func:`sast.runs.load.load_run`), rebuilds its splits and scores only
its test part, fitting anything on validation. May import training, deploy, interop and
everything below; never study or cli.
"""
