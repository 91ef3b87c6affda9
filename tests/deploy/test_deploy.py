"""Deployment: quantisation, integer-only inference against an independent NumPy reference,
saturation, the discrete leak, SynOps against hand and brute-force counts, and `sast deploy`.

The reference below re-implements the integer arithmetic in plain NumPy (its own pooling,
convolution, rounding and loop order: stage by stage over all steps, where sast.deploy runs
step by step). It reads only the integer parameters of a quantised network (weights, scales as
multiplier and shift, bias, threshold, leak factor), never sast.deploy's functions; those
parameters are checked against the float network separately.
"""

import os

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view
from torch.nn import functional

import sast
from sast.cli import main
from sast.deploy import (
    Leak,
    QFormat,
    Synapses,
    count_synops,
    dense_macs,
    quantise_network,
    quantise_weight,
    read_topology,
)
from sast.layers import lif_attributes, lif_layers, spike_mode
from sast.protocol.deploy import deploy_model
from sast.runs.folder import read_json

from ..conftest import SHARED_DATA

torch.set_num_threads(1)

# --- the independent NumPy integer reference -----------------------------------------------


def ref_round_shift(x, r):
    """floor((x + 2^r / 2) / 2^r): nearest, ties towards +inf."""
    p = np.power(np.int64(2), np.asarray(r, dtype=np.int64))
    return np.floor_divide(x + p // 2, p)


def ref_sum_pool(x, k):
    hk, wk = x.shape[-2] // k, x.shape[-1] // k
    out = np.zeros(x.shape[:-2] + (hk, wk), dtype=np.int64)
    for i in range(k):
        for j in range(k):
            out += x[..., i: hk * k: k, j: wk * k: k]
    return out


def ref_conv(x, q, padding):
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = sliding_window_view(xp, q.shape[2:], axis=(2, 3))  # [N, C, Ho, Wo, kh, kw]
    return np.einsum("nchwij,ocij->nohw", windows, q)


def ref_leak(u, mode, factor, fraction_bits):
    if mode == "multiplier":
        p = 2**fraction_bits
        return np.floor_divide(u * factor + p // 2, p)
    return u - np.floor_divide(u, np.power(np.int64(2), factor))


def reference_run(net, frames, integer_bits, fraction_bits):
    """Membranes and spikes of every stage [T, B, ...] and the readout, in NumPy int64."""
    lo, hi = -(2 ** (integer_bits + fraction_bits - 1)), 2 ** (integer_bits + fraction_bits - 1) - 1
    x = np.asarray(frames, dtype=np.int64)
    membranes, spikes = [], []
    for st in net.stages:
        syn = st.synapses
        n_steps, batch = x.shape[:2]
        flat = x.reshape((n_steps * batch,) + x.shape[2:])
        if syn.pool > 1:
            flat = ref_sum_pool(flat, syn.pool)
        if syn.flatten:
            flat = flat.reshape(n_steps * batch, -1)
        q = st.weight.q.numpy()
        acc = ref_conv(flat, q, syn.padding) if syn.kind == "conv" else flat @ q.T
        acc = acc.reshape((n_steps, batch) + acc.shape[1:])
        per_channel = (-1,) + (1,) * (acc.ndim - 3)
        m = st.multiplier.numpy().reshape(per_channel)
        r = st.shift.numpy().reshape(per_channel)
        current = ref_round_shift(acc * m, r) + st.bias.numpy().reshape(per_channel)
        theta = None if st.threshold is None else st.threshold.numpy()
        factor = np.asarray(st.leak.factor)
        u = np.zeros(current.shape[1:], dtype=np.int64)
        s = np.zeros_like(u)
        us, ss = [], []
        zero = theta is not None and st.reset == "zero"
        for t in range(n_steps):
            kept = np.where(s == 1, 0, u) if zero else u  # reset to zero: forget a fired U
            v = ref_leak(kept, st.leak.mode, factor, st.leak.fraction_bits) + current[t]
            if theta is not None and not zero:
                v = v - theta * s
            u = np.clip(v, lo, hi)
            us.append(u)
            if theta is not None:
                s = (u > theta).astype(np.int64)
                ss.append(s)
        membranes.append(np.stack(us))
        if ss:
            spikes.append(np.stack(ss))
            x = spikes[-1]
    readout = membranes[-1].sum(0) if net.readout == "leaky" else spikes[-1].sum(0)
    return membranes, spikes, readout


def assert_bit_exact(net, frames, fmt):
    trace = net.run(torch.as_tensor(frames), record=True)
    membranes, spikes, readout = reference_run(net, frames, fmt.integer_bits, fmt.fraction_bits)
    assert len(trace.membranes) == len(membranes) and len(trace.spikes) == len(spikes)
    for ours, ref in zip(trace.membranes, membranes, strict=True):
        np.testing.assert_array_equal(ours.numpy(), ref)
    for ours, ref in zip(trace.spikes, spikes, strict=True):
        np.testing.assert_array_equal(ours.numpy(), ref)
    np.testing.assert_array_equal(trace.readout.numpy(), readout)
    return trace


def make_model(arch, input_shape, seed, gain=6.0, per_neuron=False, **kw):
    torch.manual_seed(seed)
    model = sast.build_model(arch, input_shape, **kw).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() > 1:
                p.mul_(gain)
        if per_neuron:
            for layer in lif_layers(model):
                shape = layer_shape(model, layer)
                layer.beta = torch.rand(shape, dtype=torch.float64) * 0.95
                layer.threshold = 0.5 + torch.rand(shape, dtype=torch.float64)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model


def layer_shape(model, layer):
    stage = [s for s in read_topology(model).stages if s.neuron == "lif"][
        list(lif_layers(model)).index(layer)]
    out = stage.synapses.out_shape
    return (out[0], 1, 1) if len(out) == 3 else out


def random_frames(shape, seed, rate=0.4):
    rng = np.random.default_rng(seed)
    return rng.poisson(rate, size=shape).astype(np.int64)


RANDOM_NETWORKS = [
    # arch, input shape, build options, weight bits, granularity, membrane, leak
    ("nmnist-mlp", (2, 6, 6), dict(hidden=(12, 8)), 8, "per-channel", "Q8.8", "multiplier"),
    ("nmnist-mlp", (1, 5, 5), dict(hidden=(7,), readout="count"), 4, "per-tensor", "Q6.10",
     "shift"),
    ("nmnist-conv", (2, 9, 9), dict(channels=(3, 4)), 8, "per-tensor", "Q8.8", "shift"),
    ("nmnist-conv", (2, 10, 7), dict(channels=(3,), hidden=(6,), readout="count"), 4,
     "per-channel", "Q8.8", "multiplier"),
    ("nmnist-conv", (2, 8, 8), dict(channels=(3, 4), norm="batch", readout_beta=0.5), 4,
     "per-channel", "Q5.7", "multiplier"),
    ("dvsgesture-conv", (2, 11, 11), dict(channels=(2, 3), hidden=(5,)), 6, "per-channel",
     "Q10.6", "shift"),
]


@pytest.mark.parametrize("case", range(len(RANDOM_NETWORKS)))
@pytest.mark.parametrize("per_neuron", [False, True])
@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_integer_inference_matches_the_numpy_reference_bit_for_bit(case, per_neuron, reset):
    arch, shape, opts, bits, granularity, fmt, leak = RANDOM_NETWORKS[case]
    model = make_model(arch, shape, seed=case, per_neuron=per_neuron, reset=reset, **opts)
    net = quantise_network(model, bits, granularity, fmt, leak, leak_fraction_bits=10)
    frames = random_frames((7, 5, *shape), seed=case)
    trace = assert_bit_exact(net, frames, QFormat.parse(fmt))
    for s in trace.spikes:  # the comparison is not vacuous: neurons fire, and not always
        assert 0 < float(s.double().mean()) < 1
    assert all(st.reset == reset for st in net.stages if st.spiking)


def test_quantised_parameters_follow_from_the_float_network():
    model = make_model("nmnist-conv", (2, 9, 9), seed=1, channels=(3, 4), hidden=(5,),
                       readout="count")
    fmt = QFormat(8, 8)
    for granularity in ("per-channel", "per-tensor"):
        net = quantise_network(model, 6, granularity, fmt, "multiplier", leak_fraction_bits=12)
        for stage, ist in zip(read_topology(model).stages, net.stages, strict=True):
            w = stage.weight.numpy()
            rows = np.abs(w.reshape(len(w), -1))
            peak = rows.max(1) if granularity == "per-channel" else np.full(len(w), rows.max())
            scale = peak / 31
            q = np.clip(np.round(w / scale.reshape((-1,) + (1,) * (w.ndim - 1))), -31, 31)
            np.testing.assert_array_equal(ist.weight.q.numpy(), q)
            np.testing.assert_allclose(ist.weight.scale.numpy(), scale)
            pool = stage.synapses.pool
            real = scale * 2**8 / pool**2
            m, r = ist.multiplier.numpy(), ist.shift.numpy()
            np.testing.assert_allclose(m / 2.0**r, real, rtol=2.0**-14)
            assert m.max() < 2**15
            np.testing.assert_array_equal(ist.bias.numpy(), np.round(stage.bias.numpy() * 256))
            assert int(ist.threshold) == 256  # ϑ = 1.0 in Q8.8
            assert int(ist.leak.factor) == round(0.9 * 4096)


def nmnist_samples(n_per_digit=1, digits=range(6)):
    root = SHARED_DATA / "nmnist" / "Train"
    if not root.is_dir():
        pytest.skip(f"real N-MNIST recordings absent: {root} does not exist (set "
                    "$SAST_TEST_DATA to a folder holding nmnist/Train/<digit>/*.bin)")
    from sast.data.events import eventset_to_frames
    from sast.data.nmnist import load_nmnist_files

    paths, labels = [], []
    for d in digits:
        files = sorted((root / str(d)).glob("*.bin"))[:n_per_digit]
        paths += files
        labels += [d] * len(files)
    if not paths:
        pytest.skip(f"no .bin files under {root}")
    events = load_nmnist_files(paths, np.asarray(labels), progress=False)
    frames = eventset_to_frames(events, 10, "time")  # uint8 [N, T, P, H, W]
    return torch.from_numpy(frames).transpose(0, 1).contiguous(), labels


@pytest.mark.parametrize("arch, opts, leak", [
    ("nmnist-mlp", dict(hidden=(24,)), "multiplier"),
    ("nmnist-mlp", dict(hidden=(24,), reset="zero"), "shift"),
    ("nmnist-conv", dict(channels=(4, 8)), "shift"),
    ("nmnist-conv", dict(channels=(4,), hidden=(8,), readout="count"), "multiplier"),
    ("nmnist-conv", dict(channels=(4, 8), reset="zero"), "multiplier"),
])
def test_integer_inference_matches_the_reference_on_real_nmnist(arch, opts, leak):
    frames, _ = nmnist_samples()
    model = make_model(arch, (2, 34, 34), seed=0, gain=4.0, **opts)
    for bits in (8, 4):
        net = quantise_network(model, bits, "per-channel", "Q8.8", leak)
        trace = assert_bit_exact(net, frames.numpy(), QFormat(8, 8))
        assert all(0 < float(s.double().mean()) < 1 for s in trace.spikes)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_fine_integer_network_reproduces_the_float_hard_network(reset):
    """With 16-bit weights, a Q16.16 membrane and a 24-bit leak, integer inference is the float
    hard network up to rounding: the same spikes almost everywhere, the same predictions (for
    either reset: the integer reset follows the float one)."""
    model = make_model("nmnist-conv", (2, 12, 12), seed=3, channels=(4, 6), hidden=(10,),
                       reset=reset)
    frames = random_frames((8, 16, 2, 12, 12), seed=3)
    net = quantise_network(model, 16, "per-channel", "Q16.16", "multiplier",
                           leak_fraction_bits=24)
    trace = net.run(torch.from_numpy(frames), record=True)
    with lif_attributes(model, "membrane", record=True, spike_mode="hard") as layers, \
            torch.no_grad():
        logits = model(torch.from_numpy(frames).float())
        float_spikes = [(layer.membrane - layer.threshold > 0).long() for layer in layers]
    for ours, theirs in zip(trace.spikes, float_spikes, strict=True):
        assert float((ours == theirs).double().mean()) > 0.995
    torch.testing.assert_close(net.logits(trace).float(), logits, atol=2e-3, rtol=0)
    assert torch.equal(trace.prediction(), logits.argmax(1))


# --- saturation, quantisation, formats, leak ------------------------------------------------


def test_membrane_saturates_instead_of_wrapping():
    model = sast.build_model("nmnist-mlp", (1, 1, 2), 2, hidden=(2,)).eval()
    with torch.no_grad():
        hidden = model[1].module
        hidden.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, -10.0]]))
        hidden.bias.zero_()
    fmt = QFormat(4, 4)  # an 8-bit word: [-128, 127], values [-8, 7.9375]
    net = quantise_network(model, 8, "per-channel", fmt, "multiplier")
    frames = np.full((4, 1, 1, 1, 2), 5, dtype=np.int64)  # current ±50 ≫ 7.94
    trace = assert_bit_exact(net, frames, fmt)
    u = trace.membranes[0][:, 0].numpy()
    assert (u[:, 0] == 127).all() and (u[:, 1] == -128).all()
    # without the clamp the first step alone is far outside the word, and an 8-bit register
    # that wraps would hold something else entirely
    current = int(net.stages[0].current(torch.from_numpy(frames[0]))[0, 0])
    assert current > 127
    assert np.int64(current).astype(np.int8) != 127
    assert (trace.spikes[0][:, 0, 0] == 1).all() and (trace.spikes[0][:, 0, 1] == 0).all()


def test_per_channel_error_is_at_most_per_tensor_error():
    torch.manual_seed(0)
    w = torch.randn(4, 16, dtype=torch.float64) * torch.tensor([[1e-3], [1.0], [50.0], [0.2]])
    errors, row_errors = {}, {}
    for granularity in ("per-channel", "per-tensor"):
        for bits in (8, 4):
            qw = quantise_weight(w, bits, granularity)
            q_max = 2 ** (bits - 1) - 1
            assert qw.q.dtype == torch.int64 and int(qw.q.abs().max()) <= q_max
            err = (w - qw.dequantised()).abs()
            assert (err <= qw.scale[:, None] / 2 + 1e-12).all()  # within half a step
            errors[granularity, bits] = float((err**2).mean())
            row_errors[granularity, bits] = (err.norm(dim=1) / w.norm(dim=1)).tolist()
    for bits in (8, 4):
        assert errors["per-channel", bits] <= errors["per-tensor", bits]
        for ch, pt in zip(row_errors["per-channel", bits], row_errors["per-tensor", bits],
                          strict=True):
            assert ch <= pt
    # one scale for all rows rounds the smallest row to zero; a scale per row keeps it
    assert row_errors["per-tensor", 8][0] == 1.0 and row_errors["per-channel", 8][0] < 0.01


@pytest.mark.parametrize("bits", [2, 3, 8, 12, 16])
def test_quantised_weights_use_the_symmetric_range(bits):
    w = torch.linspace(-2, 1, 60, dtype=torch.float64).reshape(3, 20)
    qw = quantise_weight(w, bits, "per-tensor")
    q_max = 2 ** (bits - 1) - 1
    assert int(qw.q.min()) == -q_max and int(qw.q.max()) <= q_max
    assert float(qw.scale[0]) == pytest.approx(2.0 / q_max)


@pytest.mark.parametrize("bits", [0, 1, 17, 4.0, True])
def test_bad_weight_bits_are_refused(bits):
    with pytest.raises(ValueError, match="weight bits"):
        quantise_weight(torch.ones(2, 2), bits)


def test_membrane_format_parsing_and_limits():
    fmt = QFormat.parse("Q8.8")
    assert (fmt.integer_bits, fmt.fraction_bits, fmt.min_int, fmt.max_int) == (8, 8, -32768, 32767)
    assert str(QFormat.parse("q1.15")) == "Q1.15"
    for bad in ("Q8", "8.8", "Q8.8.8", "Q-1.4", ""):
        with pytest.raises(ValueError, match=r"Q<I>\.<F>"):
            QFormat.parse(bad)
    with pytest.raises(ValueError, match="integer bit"):
        QFormat.parse("Q0.8")
    with pytest.raises(ValueError, match="at most 32 bits"):
        QFormat.parse("Q20.20")
    with pytest.raises(ValueError, match="threshold"):
        QFormat(1, 8).threshold_on_grid(1.0)  # largest value 1 − 2^−8 < ϑ
    with pytest.raises(ValueError, match="threshold"):
        QFormat(8, 2).threshold_on_grid(0.1)  # rounds to 0


def test_power_of_two_leak_reports_its_beta_error():
    leak = Leak.from_beta(0.9, "shift")
    assert int(leak.factor) == 3 and float(leak.effective_beta) == 0.875
    assert float(leak.beta_error) == pytest.approx(-0.025)
    summary = leak.summary()
    assert summary["shift"] == 3 and summary["beta_error"] == pytest.approx(-0.025)
    assert int(Leak.from_beta(0.95, "shift").factor) == 4       # 0.9375 is nearer than 0.96875
    assert float(Leak.from_beta(0.0, "shift").effective_beta) == 0.0
    u = torch.tensor([100, -100, 7, -1, 0])
    assert leak.apply(u).tolist() == [88, -87, 7, 0, 0]          # u − ⌊u / 8⌋
    mult = Leak.from_beta(0.9, "multiplier", 12)
    assert int(mult.factor) == 3686 and float(mult.effective_beta) == 3686 / 4096
    assert mult.summary()["beta_error"] == pytest.approx(3686 / 4096 - 0.9)
    # (u·3686 + 2048) >> 12: 100 → 90 (89.99…), −100 → −90, 5 → 4 (4.4995), 1 → 1 (0.9)
    assert mult.apply(torch.tensor([100, -100, 5, 1])).tolist() == [90, -90, 4, 1]
    per_neuron = Leak.from_beta(np.array([0.5, 0.74, 0.9]), "shift")
    assert per_neuron.factor.tolist() == [1, 2, 3]
    assert per_neuron.summary()["beta_error_max_abs"] == pytest.approx(0.025)


# --- SynOps and MACs ------------------------------------------------------------------------


def one_spike(shape, where, count=1):
    a = torch.zeros((1, 1, *shape), dtype=torch.int64)
    a[(0, 0, *where)] = count
    return a


def test_synops_by_hand_for_a_padded_conv_and_a_linear_layer():
    conv = Synapses("conv", (1, 5, 5), 4, kernel=(3, 3), padding=(1, 1))
    assert count_synops([conv], [one_spike((1, 5, 5), (0, 0, 0))]) == [4 * 4]   # corner: 2×2
    assert count_synops([conv], [one_spike((1, 5, 5), (0, 0, 2))]) == [6 * 4]   # edge: 2×3
    assert count_synops([conv], [one_spike((1, 5, 5), (0, 2, 2))]) == [9 * 4]   # centre: 3×3
    assert count_synops([conv], [one_spike((1, 5, 5), (0, 0, 0), count=2)]) == [2 * 16]
    # 5×5 with padding 1: per output channel (2+3+3+3+2)² = 169 synapses, not 25·9 = 225
    assert dense_macs([conv], time_steps=2) == 2 * 4 * 169
    pooled = Synapses("conv", (1, 5, 5), 4, pool=2, kernel=(3, 3), padding=(1, 1))
    assert count_synops([pooled], [one_spike((1, 5, 5), (0, 4, 4))]) == [0]     # dropped row
    assert count_synops([pooled], [one_spike((1, 5, 5), (0, 1, 1))]) == [2 * 2 * 4]
    linear = Synapses("linear", (6,), 3)
    assert count_synops([linear], [one_spike((6,), (5,))]) == [3]
    valid = Synapses("conv", (1, 5, 5), 1, kernel=(3, 3), padding=(0, 0))
    assert count_synops([valid], [one_spike((1, 5, 5), (0, 0, 0))]) == [1]
    assert count_synops([valid], [one_spike((1, 5, 5), (0, 2, 2))]) == [9]


def connectivity(syn):
    """Brute force: the dense 0/1 connection matrix [outputs, presynaptic neurons] of a layer,
    from the response of all-ones weights to every one-hot input (torch's own conv)."""
    n_in = int(np.prod(syn.in_shape))
    basis = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *syn.in_shape)
    x = basis
    if syn.pool > 1:
        x = functional.avg_pool2d(x, syn.pool) * syn.pool**2
    if syn.flatten or syn.kind == "linear":
        x = x.reshape(n_in, -1)
    if syn.kind == "conv":
        ones = torch.ones((syn.out_channels, x.shape[1], *syn.kernel), dtype=torch.float64)
        y = functional.conv2d(x, ones, padding=syn.padding)
    else:
        y = x @ torch.ones((x.shape[1], syn.out_channels), dtype=torch.float64)
    return (y.reshape(n_in, -1).T != 0).double()


def pooled_connectivity(syn):
    shape = syn.pooled_shape
    plain = Synapses(syn.kind, shape, syn.out_channels, 1, syn.flatten, syn.kernel, syn.padding)
    return connectivity(plain)


GEOMETRY = [
    Synapses("conv", (2, 7, 9), 3, kernel=(3, 3), padding=(1, 1)),
    Synapses("conv", (3, 7, 9), 4, pool=2, kernel=(3, 3), padding=(1, 1)),
    Synapses("conv", (4, 3, 4), 2, kernel=(3, 2), padding=(1, 0)),
    Synapses("linear", (2, 3, 3), 5, pool=2, flatten=True),
    Synapses("linear", (5,), 2),
]


def test_synops_and_macs_against_brute_force_on_random_spikes():
    rng = np.random.default_rng(0)
    n_steps, batch = 6, 3
    activity = [torch.from_numpy((rng.random((n_steps, batch, *g.in_shape)) < 0.3)
                                 .astype(np.int64)) for g in GEOMETRY]
    ours = count_synops(GEOMETRY, activity)
    for g, a, got in zip(GEOMETRY, activity, ours, strict=True):
        conn = connectivity(g)
        nonzero = (a.reshape(n_steps * batch, -1) != 0).double()
        products = nonzero @ conn.T  # per (step, sample, output): non-zero products s·w
        assert got == int(products.sum())
        assert dense_macs([g], n_steps) == n_steps * int(pooled_connectivity(g).sum())
    assert dense_macs(GEOMETRY, n_steps) == sum(dense_macs([g], n_steps) for g in GEOMETRY)
    # every neuron spiking at every step runs every synapse once per step (without pooling)
    unpooled = [g for g in GEOMETRY if g.pool == 1]
    ones = [torch.ones((n_steps, 1, *g.in_shape), dtype=torch.int64) for g in unpooled]
    assert count_synops(unpooled, ones) == [dense_macs([g], n_steps) for g in unpooled]


def test_synops_are_not_defined_for_graded_spikes():
    g = [Synapses("linear", (4,), 2), Synapses("linear", (2,), 3)]
    frames = torch.ones((2, 1, 4), dtype=torch.int64)
    with pytest.raises(ValueError, match="not events"):
        count_synops(g, [frames, torch.full((2, 1, 2), 0.3)])
    with pytest.raises(ValueError, match="not events"):
        count_synops(g, [frames.double() * 0.5, torch.ones((2, 1, 2))])
    assert count_synops(g, [frames, torch.ones((2, 1, 2))]) == [2 * 4 * 2, 2 * 2 * 3]


def test_network_synops_match_the_integer_network_activity():
    model = make_model("nmnist-conv", (2, 9, 9), seed=2, channels=(3, 4), hidden=(5,))
    net = quantise_network(model, 8)
    frames = torch.from_numpy(random_frames((5, 4, 2, 9, 9), seed=2))
    trace = net.run(frames, record=True)
    activity = [frames, *trace.spikes][: len(net.stages)]
    by_trains = count_synops(net.synapses, activity)
    from sast.deploy.synops import synops_from_counts

    assert by_trains == synops_from_counts(net.synapses, trace.presynaptic_counts())
    assert sum(by_trains) < 4 * dense_macs(net.synapses, 5)


# --- accuracy on a trained model and `sast deploy` ------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("deploy") / "run"
    cfg = sast.RunConfig(method="surrogate", epochs=2, max_train_samples=300, hidden=(32,),
                         time_bins=8, batch_size=32, seed=1)
    sast.fit(cfg, run, progress=False)
    return run


def test_eight_bit_accuracy_is_close_to_float_hard_accuracy(trained_run):
    cfg, model = sast.load_run(trained_run)
    from sast.runs.splits import prepare_data

    data = prepare_data(cfg).test
    result = deploy_model(model, data, (8, 4), device="cpu")
    float_acc = result["float_hard"]["accuracy"]
    assert float_acc > 0.5  # the tiny model learned something
    int8 = result["settings"][0]
    assert abs(int8["accuracy"] - float_acc) <= 0.02
    assert int8["agreement_with_float_hard"] >= 0.97
    assert result["settings"][1]["accuracy"] > 0.5 * float_acc


def test_cli_deploy_writes_deploy_json(trained_run, capsys):
    final = read_json(trained_run / "final.json")
    assert main(["deploy", str(trained_run), "--weight-bits", "8,4", "--device", "cpu",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "deploy.json" in out and "int8" in out and "int4" in out
    result = read_json(trained_run / "deploy.json")
    assert result["config"] == final["config"] and result["seed"] == 1
    assert result["split"] == "test" and result["splits"] == final["splits"]
    # the same test part and model as `sast train` scored
    assert result["float_hard"]["accuracy"] == final["hard"]["accuracy"]
    assert result["float_hard"]["n"] == final["sizes"]["test"]
    assert [s["weight_bits"] for s in result["settings"]] == [8, 4]
    sizes = [s["model_size_bytes"] for s in result["settings"]]
    assert sizes[1] < sizes[0] < result["float_hard"]["model_size_bytes"]
    for s in (result["float_hard"], *result["settings"]):
        assert 0 < s["synops_per_sample"] < result["dense_macs_per_sample"]
        assert len(s["firing_rates"]) == 1 and 0 < s["firing_rates"][0] < 1
    assert result["float_surrogate_synops"] is None
    assert "not events" in result["float_surrogate_synops_note"]
    assert result["leak"][0]["beta_error"] == pytest.approx(3686 / 4096 - 0.9)
    assert not [p for p in os.listdir(trained_run) if p.endswith(".tmp")]

    assert main(["deploy", str(trained_run), "--weight-bits", "8", "--per-tensor", "--leak",
                 "shift", "--membrane-format", "Q6.10", "--split", "val", "--device", "cpu",
                 "--no-progress"]) == 0
    result = read_json(trained_run / "deploy.json")
    assert result["split"] == "val" and result["float_hard"]["n"] == final["sizes"]["val"]
    assert result["options"]["granularity"] == "per-tensor"
    assert result["options"]["membrane_format"] == "Q6.10"
    assert result["leak"][0]["beta_effective"] == 0.875
    assert result["leak"][0]["beta_error"] == pytest.approx(-0.025)


def test_cli_deploy_refuses_bad_arguments(trained_run, tmp_path, capsys):
    for args, expected in [(["--membrane-format", "Q8"], "argument --membrane-format"),
                           (["--weight-bits", "1"], "argument --weight-bits"),
                           (["--weight-bits", "8,x"], "argument --weight-bits"),
                           (["--leak", "exp"], "argument --leak"),
                           (["--leak-fraction-bits", "40"], "argument --leak-fraction-bits"),
                           (["--per-tensor", "--per-channel"], "not allowed with")]:
        with pytest.raises(SystemExit) as exc:
            main(["deploy", str(trained_run), *args])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert expected in err, err
        if args[0] == "--membrane-format":
            assert "Q<I>.<F>" in err and "e.g. Q8.8" in err
    assert main(["deploy", str(trained_run), "--membrane-format", "Q1.4", "--device",
                 "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "threshold" in err and "membrane format" in err
    assert main(["deploy", str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_spike_mode_is_left_as_it_was(trained_run):
    _, model = sast.load_run(trained_run)
    from sast.runs.splits import prepare_data

    data = prepare_data(sast.load_run(trained_run)[0]).test.subset(np.arange(8))
    with spike_mode(model, "surrogate"):
        deploy_model(model, data, (8,), device="cpu")
        assert all(layer.spike_mode == "surrogate" for layer in lif_layers(model))
