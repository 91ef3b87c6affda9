"""The report's Deployment section and figure, from hand-made deploy.json files."""

from pathlib import Path

from sast.config import RunConfig
from sast.runs.folder import atomic_write_json
from sast.study.report import write_report
from sast.study.report.deployment import deployment_pairs, deployment_section, figure_deployment
from sast.study.report.runs import Run, group_runs

from ..conftest import assert_figure


def deploy(float_acc, int8, int4, synops8, qat=None):
    result = {
        "split": "test",
        "options": {"weight_bits": [8, 4], "granularity": "per-channel",
                    "membrane_format": "Q8.8", "leak": "multiplier", "leak_fraction_bits": 12},
        "dense_macs_per_sample": 5_000_000,
        "float_hard": {"accuracy": float_acc, "synops_per_sample": 2_000_000,
                       "model_size_bytes": 40_000},
        "settings": [
            {"weight_bits": 8, "granularity": "per-channel", "accuracy": int8,
             "synops_per_sample": synops8, "model_size_bytes": 10_500},
            {"weight_bits": 4, "granularity": "per-channel", "accuracy": int4,
             "synops_per_sample": synops8 + 100_000, "model_size_bytes": 5_500},
        ],
    }
    if qat is not None:
        result["qat"] = {"weight_bits": 8, "granularity": "per-channel",
                         "hard": {"accuracy": qat}, "agreement_with_integer": 1.0}
    return result


def final(seed, hard, val_hard, config):
    return {"seed": seed, "split": "test", "config": config, "transfer_gap_pp": 1.0,
            "surrogate": {"accuracy": hard + 0.01, "loss": 0.5},
            "hard": {"accuracy": hard, "loss": 0.6},
            "validation": {"hard": {"accuracy": val_hard}, "surrogate": {"accuracy": val_hard}},
            "timing": {"epoch_time_s_median": 1.0, "step_time_s_median": 0.01,
                       "grad_evals_per_step": 1, "grad_evals_total": 100,
                       "peak_memory_mb": 10.0}}


def run(seed, hard, val_hard, deployed, **cfg):
    config = RunConfig(seed=seed, epochs=10, **cfg).to_dict()
    return Run(Path(f"r-{cfg}-{seed}"), final(seed, hard, val_hard, config), deploy=deployed)


def study(dataset="synthetic-nmnist"):
    runs = []
    for seed, d in enumerate([deploy(0.60, 0.50, 0.40, 1_700_000),
                              deploy(0.70, 0.44, 0.46, 1_800_000)]):
        runs.append(run(seed, 0.6, 0.6, d, method="surrogate", dataset=dataset))
    for seed, d in enumerate([deploy(0.90, 0.97, 0.80, 1_300_000),
                              deploy(0.94, 0.95, 0.84, 1_320_000)]):
        # the best on validation, though not on test
        runs.append(run(seed, 0.70, 0.90, d, method="sast", rho=0.1, dataset=dataset))
    for seed, d in enumerate([deploy(0.99, 0.99, 0.99, 900_000)] * 2):
        runs.append(run(seed, 0.99, 0.60, d, method="sast", rho=0.4, dataset=dataset))
    for seed in (0, 1):  # trained longer, never deployed
        config = RunConfig(seed=seed, epochs=20, method="surrogate", dataset=dataset).to_dict()
        runs.append(Run(Path(f"long-{seed}"), final(seed, 0.8, 0.8, config)))
    return group_runs(runs)


def rows_of(text):
    return {line.split("|")[1].strip(): line for line in text.splitlines()
            if line.startswith("| ")}


def test_deployment_section_numbers_are_the_seed_means(tmp_path):
    groups = study()
    text = "\n".join(deployment_section(groups, tmp_path))
    accuracy = text.split("### Accuracy")[1].split("###")[0]
    cost = text.split("### Cost per sample")[1].split("###")[0]
    acc = rows_of(accuracy)
    # float hard (60, 70), INT8 (50, 44), INT4 (40, 46): means and ddof-0 stds by hand
    assert acc["surrogate"].startswith("| surrogate | 2 | 65.0 ± 5.0 | 47.0 ± 3.0 | 43.0 ± 3.0 |")
    assert "| sast ρ=0.1 | 2 | 92.0 ± 2.0 | 96.0 ± 1.0 | 82.0 ± 2.0 |" in acc["sast ρ=0.1"]
    assert "surrogate (epochs=20)" not in text  # no deploy.json, not in the section
    header = accuracy.splitlines()[2]
    assert "INT8 hard acc %" in header and "INT4 hard acc %" in header
    assert "as trained" not in header  # no QAT run
    # MACs 5000k; SynOps float 2000k, INT8 (1700, 1800)k, INT4 +100k; sizes 40, 10.5, 5.5 kB
    assert ("| surrogate | 5000 ± 0 | 2000 ± 0 | 1750 ± 50 | 1850 ± 50 | 40.0 ± 0.0 | "
            "10.5 ± 0.0 | 5.5 ± 0.0 |") in cost
    paper = rows_of(text.split("### Against the follow-up paper's abstract")[1])
    assert paper["INT8 hard-spike accuracy, baseline"].endswith("| 47.0 ± 3.0 % | 47.6 % |")
    assert paper["INT8 hard-spike accuracy, SAST"].endswith("| 96.0 ± 1.0 % | 96.9 % |")
    assert paper["INT4 hard-spike accuracy, baseline"].endswith("| 43.0 ± 3.0 % | 43.2 % |")
    assert paper["INT4 hard-spike accuracy, SAST"].endswith("| 82.0 ± 2.0 % | 81.0 % |")
    assert paper["SynOps per sample, baseline"].endswith("| 1750 ± 50k (INT8) | 1,734k |")
    assert paper["SynOps per sample, SAST"].endswith("| 1310 ± 10k (INT8) | 1,315k |")
    assert "paper (arXiv 2604.09696 abstract): N-MNIST" in text
    assert "baseline `surrogate`; SAST `sast ρ=0.1` (selected on validation" in text
    assert "not comparable" in text  # synthetic stand-in
    assert_figure(tmp_path / "deployment.png")


def test_the_paper_column_follows_the_dataset(tmp_path):
    text = "\n".join(deployment_section(study("synthetic-gesture"), tmp_path))
    paper = rows_of(text.split("### Against the follow-up paper's abstract")[1])
    assert paper["INT8 hard-spike accuracy, baseline"].endswith("| 25.3 % |")
    assert paper["INT4 hard-spike accuracy, SAST"].endswith("| 43.8 % |")
    assert paper["SynOps per sample, SAST"].endswith("| 4,323k |")
    assert "DVS Gesture" in text


def test_pairs_are_picked_per_training_quantisation_on_validation():
    runs = [run(s, 0.5, 0.5, deploy(0.5, 0.5, 0.5, 1e6), method="surrogate") for s in (0, 1)]
    runs += [run(s, 0.5, 0.5, deploy(0.5, 0.5, 0.5, 1e6, qat=0.6), method="surrogate",
                 qat_weight_bits=8) for s in (0, 1)]
    runs += [run(s, 0.9, v, deploy(0.5, 0.5, 0.5, 1e6, qat=0.7), method="sast", rho=r,
                 qat_weight_bits=8) for s in (0, 1) for r, v in ((0.1, 0.4), (0.3, 0.8))]
    groups = group_runs(runs)
    pairs = deployment_pairs(groups)
    found = sorted((p.qat, p.baseline.label, p.sast and p.sast.label) for p in pairs)
    assert found == [("QAT 8-bit", "surrogate, QAT 8-bit", "sast ρ=0.3, QAT 8-bit"),
                     ("float-trained", "surrogate", None)]


def test_qat_groups_show_the_network_as_trained(tmp_path):
    runs = [run(s, 0.5, 0.5, deploy(0.5, 0.5, 0.5, 1e6, qat=q), method="surrogate",
                qat_weight_bits=8) for s, q in ((0, 0.62), (1, 0.66))]
    text = "\n".join(deployment_section(group_runs(runs), tmp_path))
    accuracy = text.split("### Accuracy")[1].split("###")[0]
    assert "as trained (QAT: fake-quantised weights) hard acc %" in accuracy
    assert "| surrogate, QAT 8-bit | 2 | 50.0 ± 0.0 | 64.0 ± 2.0 | 50.0 ± 0.0 |" in accuracy


def test_no_deploy_json_no_section_and_no_figure(tmp_path):
    groups = group_runs([Run(Path(f"r{s}"), final(s, 0.5, 0.5, RunConfig(seed=s).to_dict()))
                         for s in (0, 1)])
    assert deployment_section(groups, tmp_path) == []
    assert not figure_deployment(groups, tmp_path / "deployment.png")
    assert not (tmp_path / "deployment.png").exists()


def test_write_report_reads_deploy_json_from_run_folders(tmp_path):
    folders = []
    for seed, d in ((0, deploy(0.6, 0.5, 0.4, 1e6)), (1, deploy(0.7, 0.44, 0.46, 1e6))):
        folder = tmp_path / "runs" / f"run{seed}"
        config = RunConfig(seed=seed, method="surrogate").to_dict()
        atomic_write_json(folder / "config.json", config)
        atomic_write_json(folder / "final.json", final(seed, 0.6, 0.6, config))
        folders.append((folder, d))
    path = write_report([tmp_path], tmp_path / "plain")
    assert "## Deployment" not in path.read_text()
    assert not (tmp_path / "plain" / "figures" / "deployment.png").exists()
    for folder, d in folders:
        atomic_write_json(folder / "deploy.json", d)
    path = write_report([tmp_path], tmp_path / "deployed")
    text = path.read_text()
    assert "## Deployment" in text and "| surrogate | 2 | 65.0 ± 5.0 | 47.0 ± 3.0 |" in text
    assert "![accuracy against weight width](figures/deployment.png)" in text
    assert_figure(tmp_path / "deployed" / "figures" / "deployment.png")
