"""Print docs/interop.md's parity table: for every case of tests/interop/test_convert.py, the
spike decisions of each neuron layer that differ between the source library and
:func:`sast.convert` in hard mode. Run from anywhere: ``python docs/scripts/convert_parity.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import tests.interop.test_convert as cases  # noqa: E402


def main() -> None:
    rows = []

    def recorder(label):  # noqa: ANN001, ANN202
        def check(_source_out, source_layers, converted, x):  # noqa: ANN001, ANN202
            _, layers = cases._sast_layers(converted, x)
            for i, (mine, theirs) in enumerate(zip(layers, source_layers, strict=True)):
                rows.append((label, i + 1, float(theirs.mean()), int((mine != theirs).sum()),
                             mine.numel()))
        return check

    runs = [
        ("snnTorch Leaky, subtract (MLP, then conv)",
         lambda: cases.test_snntorch_mlp_and_conv_give_the_same_spikes("subtract")),
        ("snnTorch Leaky, zero (MLP, then conv)",
         lambda: cases.test_snntorch_mlp_and_conv_give_the_same_spikes("zero")),
        ("snnTorch Leaky, conv + folded BatchNorm2d",
         cases.test_batchnorm_is_folded_and_a_lone_one_refused),
    ]
    for node, options in cases.SPIKINGJELLY_NODES:
        for mode in "ms":
            runs.append((f"SpikingJelly {node} {options}, step_mode={mode}",
                         lambda n=node, o=options, m=mode:
                         cases.test_spikingjelly_gives_the_same_spikes(m, n, o)))
    for reset in ("value", "subtract"):
        runs.append((f"Norse LIFBoxCell, reset_{reset}",
                     lambda r=reset: cases.test_norse_gives_the_same_spikes(r)))
    for label, run in runs:
        cases._check = recorder(label)
        try:
            run()
        except Exception as err:  # noqa: BLE001 (the refusal checks after the parity case)
            if "DID NOT RAISE" in str(err):
                raise
    print("| source, neuron, reset | layer | firing rate | differing decisions |")
    print("|---|---|---|---|")
    for label, layer, rate, differ, total in rows:
        print(f"| {label} | {layer} | {rate:.3f} | {differ} / {total} |")


if __name__ == "__main__":
    main()
