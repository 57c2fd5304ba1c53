"""Every ticket variant and branch through the CLI on the shared CIFAR-10 subset at 32 px (short schedules).

Marked slow (real data); skipped with the reason where ../shared/data is absent.
"""

import json

import pytest
import torch
from click.testing import CliRunner

from degan.cli import main

pytestmark = pytest.mark.slow

SMALL = ["--model", "dcgan", "--width", "0.25", "--resolution", "32", "--batch", "8", "--snap", "0.032",
         "--metrics", "none", "--no-progress", "--subset", "200", "--kimg", "0.032",
         "--set", "train.log_kimg=0.016"]


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def done(path):
    return json.loads((path / "done.json").read_text())


def runs(outdir):
    return {p.name: p for p in outdir.iterdir() if p.name.startswith("ticket-")}


@pytest.fixture
def cifar(shared_data):
    return shared_data / "cifar10-subset" / "cifar10_prefix_subset.npz"


@pytest.mark.parametrize("args,density_G,density_D", [
    (["--variant", "IMP_G"], 0.64, 1.0),
    (["--variant", "IMP_GD"], 0.64, 0.64),
    (["--variant", "IMP_GD_KD"], 0.64, 0.64),
    (["--method", "imp_layerwise"], 0.64, 0.64),
    (["--method", "omp"], 0.64, 0.64),
    (["--method", "random"], 0.64, 0.64),
    (["--rate", "0.4"], 0.36, 0.36),
    (["--rewind", "50%", "--d-reset", "seed:3", "--mask-source", "G_ema"], 0.64, 0.64),
])
def test_variants_on_cifar(tmp_path, cifar, args, density_G, density_D):
    out = tmp_path / "runs"
    run(["ticket", "--data", cifar, "--outdir", out, "--levels", "2", *args, *SMALL])
    (r,) = runs(out).values()
    d = done(r / "level_2")
    assert d["density_G"] == pytest.approx(density_G, abs=2e-3)
    assert d["density_D"] == pytest.approx(density_D, abs=2e-3)
    assert d["costs"]["train_flops_effective"] < d["costs"]["train_flops_dense"]
    assert d["real_images_shown"] == 32


def test_branches_transfer_channel_export_report_on_cifar(tmp_path, cifar, shared_data):
    out = tmp_path / "runs"
    run(["ticket", "--data", cifar, "--outdir", out, "--levels", "1", "--branches",
         "random_ticket,random_mask,finetune", *SMALL])
    (r,) = runs(out).values()
    for b in ("random_ticket", "random_mask", "finetune"):
        assert done(r / f"level_1_{b}")["branch"] == b
    fmnist = shared_data / "fashion-mnist"
    res = run(["branch", r / "level_1", "transfer", "--data", fmnist, "--no-progress"], expect=2)
    assert "--adapt" in res
    run(["branch", r / "level_1", "transfer", "--data", fmnist, "--adapt", "--init", "fresh", "--no-progress"])
    (t,) = [p for p in r.iterdir() if p.name.startswith("level_1_transfer-")]
    assert done(t)["transfer_init"] == "fresh"
    run(["branch", r / "level_0", "channel", "--prune-fraction", "0.6", "--slim-kimg", "0.016", "--no-progress"])
    c = done(r / "level_0_channel")
    assert c["flops_ratio"] < 0.6
    run(["export", r, "--compact", "--out", tmp_path / "export"])
    from degan.export import load_compact

    G = load_compact(tmp_path / "export" / "level_0_channel")
    with torch.no_grad():
        assert G(torch.randn(2, G.z_dim)).shape == (2, 3, 32, 32)
    report = (r / "report.md").read_text()
    for name in ("random_ticket", "random_mask", "finetune", "transfer", "channel"):
        assert name in report
