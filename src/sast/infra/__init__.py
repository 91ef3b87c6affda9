"""Process and file infrastructure that knows nothing of spiking networks (floor 1).

Holds :mod:`~sast.infra.atomicio` (atomic file writes), :mod:`~sast.infra.lock` (one process per
run or sweep folder), :mod:`~sast.infra.memory` (a run's peak memory), :mod:`~sast.infra.runtime`
(process tuning: flushed denormals, glibc keeping freed blocks) and
:mod:`~sast.infra.distributed` (one run on several processes under ``torchrun``). May import
the standard library, NumPy and PyTorch only: no other room of ``sast``.
"""
