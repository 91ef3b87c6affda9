"""Studies: many runs at once, and what they show (floor 9).

Holds :mod:`~sast.study.sweep` (grid files, their expansion, config hashes and run-folder
names), :mod:`~sast.study.execute` (one run of a sweep trained and evaluated, its status, the
local process pool), :mod:`~sast.study.runner` (:func:`~sast.study.runner.run_sweep`: skip,
resume, retry; the results table), :mod:`~sast.study.ray` (the same runs as Ray tasks),
:mod:`~sast.study.reproduce` (the shipped study grids, ``sast reproduce``) and
:mod:`sast.study.report` (the Markdown report and its figures). May import protocol, training
and everything below; never cli.
"""
