"""Networks in and out of other tools (floor 7): :mod:`~sast.interop.convert` turns snnTorch,
SpikingJelly and Norse networks into ``sast`` models; :mod:`~sast.interop.nir` writes a trained
network as a NIR graph and :mod:`~sast.interop.nir_import` reads one back. May import deploy's
topology reader and the rooms below it; run folders are read one floor up, in
:mod:`sast.protocol.export`.
"""
