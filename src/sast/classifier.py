"""A spiking network read out as a classifier: per-step output ``[T, B, C]`` to logits ``[B, C]``.

Every function that trains or scores a model here (:func:`sast.fit`, the evaluation and
calibration functions) calls ``model(x)`` on time-first input and reads logits ``[B, C]``.
The networks of other libraries, once converted (:func:`sast.convert`), return what their last
layer returns at every step — spikes ``[T, B, C]``. :class:`SpikingClassifier` puts one of
these readouts on top:

- ``"count"`` (the default): the spike count of each output neuron, z_c = Σ_t s_c[t] (snnTorch's
  ``ce_count_loss`` reads the same count). In hard mode counts are integers and ties go to the
  lowest class index, as ``argmax`` breaks them.
- ``"mean"``: the mean of the output over the steps, z_c = (1/T)·Σ_t y_c[t] (a network that
  ends in a leaky integrator, as NIR graphs with an LI node do: :func:`sast.from_nir`);
- ``"membrane"``: the mean membrane potential of the last LIF layer over the steps,
  z_c = (1/T)·Σ_t u_c[t], with u[t] before its own reset (:mod:`sast.neuron`).
- a callable: ``readout(output)`` returns the logits.

A network that already returns ``[B, C]`` (a :func:`sast.build_model` network, a hand-written
one with its own readout) is passed through under ``"count"``. The training loss is the cross
entropy of the logits unless ``loss(logits, labels)`` is given. These readouts are this
package's choices, not the paper's.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from sast.layers import LIF, check_time_first, lif_layers

READOUTS = ("count", "mean", "membrane")

Readout = str | Callable[[Tensor], Tensor]
Loss = Callable[[Tensor, Tensor], Tensor]


class SpikingClassifier(nn.Module):
    """``net`` (time-first ``[T, B, ...]`` in) with a readout to logits ``[B, C]`` (see the
    module docstring; by default ``net``'s own ``readout`` attribute where it names one, else
    ``"count"``). Its ``state_dict`` is ``net``'s under the prefix ``net.``."""

    def __init__(self, net: nn.Module, readout: Readout | None = None, loss: Loss | None = None,
                 ) -> None:
        super().__init__()
        if readout is None:  # the network's own (sast.from_nir sets it), else the count
            own = getattr(net, "readout", None)
            readout = own if isinstance(own, str) and own in READOUTS else "count"
        if not (callable(readout) or readout in READOUTS):
            raise ValueError(f"readout must be one of {READOUTS} or a callable output → logits, "
                             f"got {readout!r}")
        if loss is not None and not callable(loss):
            raise ValueError(f"loss must be a callable (logits, labels) → scalar, got {loss!r}")
        self.net = net
        self.readout = readout
        self.loss = loss
        self._membrane_layer: LIF | None = None
        if readout == "membrane":
            layers = list(lif_layers(net))
            if not layers:
                raise ValueError("readout='membrane' reads the last LIF layer's membrane, and "
                                 f"the network holds no LIF layer: {type(net).__name__}")
            self._membrane_layer = layers[-1]

    def training_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The loss training minimises: ``loss(logits, labels)``, by default the cross
        entropy."""
        if self.loss is None:
            return nn.functional.cross_entropy(logits, labels)
        return self.loss(logits, labels)

    def forward(self, x: Tensor) -> Tensor:
        check_time_first(x, 3, "SpikingClassifier")
        layer = self._membrane_layer
        if layer is not None:
            record, layer.record = layer.record, True
        try:
            output = self.net(x)
            if callable(self.readout):
                return self.readout(output)
            if layer is not None:
                return layer.membrane.mean(0).flatten(1)
        finally:
            if layer is not None:
                layer.record = record
                if not record:
                    layer.membrane = None
        if output.dim() == 2:
            return output
        if self.readout == "mean":
            return output.mean(0).flatten(1)
        if output.dim() < 3 or output.shape[:2] != x.shape[:2]:
            raise ValueError(
                f"readout='count' sums the network's output [T, B, C] over T; the network "
                f"returned {tuple(output.shape)} for input {tuple(x.shape)}")
        return output.sum(0).flatten(1)

    def extra_repr(self) -> str:
        readout = getattr(self.readout, "__name__", repr(self.readout))
        return f"readout={readout}" + ("" if self.loss is None else ", custom loss")


def as_classifier(model: nn.Module, readout: Readout | None = None, loss: Loss | None = None,
                  ) -> SpikingClassifier:
    """``model`` as it is when it is a :class:`SpikingClassifier` (and no other readout or loss
    is asked for), else ``model`` wrapped in one. ``readout`` None: the model's own
    ``readout`` attribute where it has one (:func:`sast.from_nir` sets it), else
    ``"count"``."""
    if isinstance(model, SpikingClassifier):
        if readout is not None and readout is not model.readout or loss is not None:
            raise ValueError("the model is already a SpikingClassifier with its own readout "
                             "and loss; pass its net to read it out another way")
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return SpikingClassifier(model, readout, loss)

