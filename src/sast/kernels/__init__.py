"""Accelerator kernels of the LIF scan (floor 2): :mod:`~sast.kernels.triton_lif` (the
autograd function and its dispatch rules) and :mod:`~sast.kernels.triton_kernels` (the Triton
forward and backward-through-time kernels, jitted on first use). May import
:mod:`sast.surrogate` only; :func:`sast.neuron.lif_scan` is what calls into it.
"""
