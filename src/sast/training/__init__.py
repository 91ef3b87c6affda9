"""The training loop: one step function per method, epochs, checkpoints and the metrics log.

Methods (``RunConfig.method``):

- ``surrogate``: surrogate-forward SNN, base optimiser (:func:`plain_step`);
- ``sast``: surrogate-forward SNN, SAM (:func:`sam_step`);
- ``ste``: hard spikes forward, σ_k′ backward, base optimiser;
- ``ste-sam``: the STE network with SAM.

With ``qat_weight_bits`` set, every forward pass — training, validation and the final
evaluation — sees fake-quantised synaptic weights and the gradient passes straight through to
the float weights (:mod:`sast.quantise`); the step functions take that as ``weights``, a context
around each forward–backward pass.

Every epoch is seeded from (seed, epoch) alone, and a checkpoint is written atomically after it,
so a run resumed from its checkpoint continues bit for bit as if it had never stopped.

Under ``torchrun`` one run trains on several processes (:mod:`sast.infra.distributed`): each rank
takes its block of every global batch, and every backward pass is followed by an all-reduce
of the gradients, so every rank takes the same step; rank 0 alone writes the run folder.

Holds :mod:`~sast.training.steps` (one optimiser step per method, ``StepResult``, the compiled
model), :mod:`~sast.training.epoch` (shuffling, batches, one epoch, the ρ and slope schedules),
:mod:`~sast.training.loop` (:func:`~sast.training.loop.fit`, checkpoints, resume, the final
evaluation) and :mod:`~sast.training.model` (:func:`~sast.training.model.train_model`: ``fit``'s
loop for a network and data of the user's own). Floor 7: may import runs, evaluation, config and
everything below them; never deploy, protocol, study or cli.
"""
