"""RG-GAN from the command line: `degan train --dynamic-prune` end to end on tiny runs, and its bad input."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from degan.cli import main

TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
        "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016"]


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def only(outdir, prefix="train-"):
    (r,) = [p for p in outdir.iterdir() if p.name.startswith(prefix)]
    return r


def test_dynamic_prune_trains_logs_and_exports(tmp_path):
    from degan.lottery import load_generator
    from degan.lottery.layout import StageLayout
    from degan.models import create_model

    out = tmp_path / "rg"
    # a large lambda so that thresholds visibly move within a few steps
    run(["train", "--data", "faces100", "--outdir", out, "--kimg", "0.064", "--dynamic-prune",
         "--set", "dynamic.lam=0.05", *TINY])
    r = only(out)
    stage = r / "level_0"
    done = json.loads((stage / "done.json").read_text())
    assert done["variant"] == "RG" and done["dynamic"]["settings"]["lam"] == 0.05
    assert done["density_G"] < 1.0 and done["density_D"] < 1.0
    assert {g["name"] for g in done["dynamic"]["optimizer_G"]} == {"weights", "thresholds"}
    assert done["costs"]["train_flops_effective"] <= done["costs"]["train_flops_dense"]
    stats = [json.loads(line) for line in (stage / "stats.jsonl").read_text().splitlines()]
    assert all("thr_mean_G" in s and s["density_G"] <= 1.0 for s in stats)
    assert any(s["density_G"] < 1.0 for s in stats)  # the logged density is the dynamic one, not a constant 1
    dens = json.loads((stage / "density.json").read_text())
    assert dens["dynamic"] and dens["density_G"] == pytest.approx(done["density_G"])
    # Sparse_RG is the run's G_ema; Dense_RG beside it; both load into a model without the masks machinery
    sparse, dense = load_file(str(stage / "G_ema.safetensors")), load_file(str(stage / "G_ema_dense.safetensors"))
    assert not any("threshold" in k or "mask" in k for k in sparse)
    G_plain, _ = create_model("dcgan", width=0.25, resolution=16)
    G_plain.load_state_dict(sparse)
    zeros_sparse = sum(int((v == 0).sum()) for k, v in sparse.items() if k.endswith("weight") and v.dim() > 1)
    zeros_dense = sum(int((v == 0).sum()) for k, v in dense.items() if k.endswith("weight") and v.dim() > 1)
    assert zeros_sparse > zeros_dense
    G = load_generator(StageLayout(stage))
    with torch.no_grad():
        assert G(torch.randn(2, G.z_dim)).shape == (2, 3, 16, 16)
    assert (stage / "dynamic_density.png").is_file() and "RG-GAN" in (r / "report.md").read_text()


def test_dynamic_prune_bad_input(tmp_path):
    out = run(["train", "--data", "faces100", "--outdir", tmp_path, "--dynamic-prune", "--set", "dynamic.lam=-1",
               *TINY], expect=2)
    assert "dynamic.lam" in out
    out = run(["train", "--data", "faces100", "--outdir", tmp_path, "--dynamic-prune", "--regen-every", "1",
               "--set", "dynamic.regen_metric=none", *TINY], expect=2)
    assert "regeneration without a metric" in out
    out = run(["ticket", "--data", "faces100", "--outdir", tmp_path, "--set", "dynamic.enabled=true", *TINY],
              expect=2)
    assert "does not combine" in out


@pytest.mark.slow
def test_dynamic_prune_with_regeneration_trigger_on_real_inception(tmp_path):
    out = tmp_path / "rg"
    run(["train", "--data", "faces100", "--outdir", out, "--kimg", "0.048", "--dynamic-prune", "--regen-every",
         "0.016", "--set", "dynamic.regen_metric=kid_train", "--set", "dynamic.regen_num_gen=16",
         "--set", "dynamic.trigger=reference", *TINY])
    stage = only(out) / "level_0"
    fids = [json.loads(line) for line in (stage / "dynamic.jsonl").read_text().splitlines()
            if json.loads(line).get("kind") == "fid"]
    assert len(fids) == 3 and all(f["fid"] >= -1 for f in fids)
    done = json.loads((stage / "done.json").read_text())
    assert len(done["dynamic"]["fids"]) == 3
