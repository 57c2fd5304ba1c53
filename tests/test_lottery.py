"""Ticket variants (IMP_G / IMP_GD / IMP_GD^KD, late rewinding, D reset) and branches, end to end on tiny runs."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file, save_file

from degan.cli import main
from degan.config import ConfigError, resolve, variant_name
from degan.errors import CheckpointError
from degan.losses import DistillationObjective, GANObjective, kd_loss
from degan.lottery import load_masks
from degan.lottery.branches import random_layerwise_mask

TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
        "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016", "--set", "train.keep_checkpoints=10"]


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


def make_folder(d, n=12, size=(20, 24), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shape = (size[0], size[1], 3) if mode == "RGB" else size
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(d / f"{i}.png")
    return d


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "imgs")


def only_run(outdir):
    (r,) = [p for p in outdir.iterdir() if p.name.startswith("ticket-")]
    return r


def done(stage):
    return json.loads((stage / "done.json").read_text())


def state_of(stage):
    (ckpt,) = sorted((stage / "checkpoints").glob("ckpt-*.pt"))[-1:]  # keep_checkpoints=10 keeps them all here
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state"]


def first_state(stage):
    first = sorted((stage / "checkpoints").glob("ckpt-*.pt"))[0]
    assert first.name == "ckpt-000000000.pt"
    return torch.load(first, map_location="cpu", weights_only=True)["state"]


# --- math -------------------------------------------------------------------------------------------------------


def test_kd_loss_matches_hand_computation():
    s, t = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.0])

    def sig(x):
        return 1 / (1 + math.exp(-x))

    terms = []
    for si, ti in zip(s.tolist(), t.tolist()):
        for ps, pt in ((sig(si), sig(ti)), (1 - sig(si), 1 - sig(ti))):
            terms.append(pt * (math.log(pt) - math.log(ps)))
    assert float(kd_loss(s, t)) == pytest.approx(sum(terms) / 4, rel=1e-6)
    assert float(kd_loss(t, t)) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="shape"):
        kd_loss(s, t[:1])


def test_distillation_adds_kd_to_d_loss_only():
    torch.manual_seed(0)
    D, T = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    D_fn = lambda x: D(x.flatten(1)).squeeze(1)  # noqa: E731
    T_fn = lambda x: T(x.flatten(1)).squeeze(1)  # noqa: E731
    G = lambda z: z.view(-1, 1, 2, 2)  # noqa: E731
    base = GANObjective("hinge")
    obj = DistillationObjective(base, T, weight=2.0)
    obj.teacher = T_fn
    real, z = torch.randn(3, 1, 2, 2), torch.randn(3, 4)
    loss, stats = obj.d_loss(G, D_fn, real, z)
    plain, _ = GANObjective("hinge").d_loss(G, D_fn, real, z)
    kd = kd_loss(torch.cat([D_fn(real), D_fn(G(z))]), torch.cat([T_fn(real), T_fn(G(z))]))
    assert float(loss.detach()) == pytest.approx(float((plain + 2.0 * kd).detach()), rel=1e-6)
    assert stats["loss_KD"] == pytest.approx(float(kd.detach()), rel=1e-6)
    g1, _ = obj.g_loss(G, D_fn, z)
    g2, _ = GANObjective("hinge").g_loss(G, D_fn, z)
    assert float(g1) == pytest.approx(float(g2))


def test_random_layerwise_mask_keeps_per_layer_counts():
    m = {"a": torch.rand(10, 10) > 0.7, "b": torch.rand(5, 3) > 0.2}
    r1, r2 = random_layerwise_mask(m, 1), random_layerwise_mask(m, 1)
    for k in m:
        assert int(r1[k].sum()) == int(m[k].sum()) and r1[k].shape == m[k].shape
        assert torch.equal(r1[k], r2[k])
    assert not torch.equal(random_layerwise_mask(m, 2)["a"], r1["a"])


def test_variant_names_and_config_errors():
    assert variant_name(resolve("dcgan", sets=["prune.networks=G"]).prune) == "IMP_G"
    assert variant_name(resolve("dcgan", sets=["prune.kd_weight=1"]).prune) == "IMP_GD_KD"
    assert variant_name(resolve("dcgan", sets=["prune.rewind=5%"]).prune) == "IMP_GD@5%"
    with pytest.raises(ConfigError, match="after the end of training"):
        resolve("dcgan", sets=["train.total_kimg=10", "prune.rewind=kimg:20"])
    with pytest.raises(ConfigError, match="init, kimg"):
        resolve("dcgan", sets=["prune.rewind=later"])
    with pytest.raises(ConfigError, match="d_reset"):
        resolve("dcgan", sets=["prune.d_reset=other"])
    with pytest.raises(ConfigError, match="prune.method"):
        resolve("dcgan", sets=["prune.method=magic"])


def test_non_binary_mask_file_is_refused(tmp_path):
    save_file({"G.w": torch.tensor([0.0, 0.5, 1.0])}, str(tmp_path / "m.safetensors"))
    with pytest.raises(CheckpointError, match="non-binary"):
        load_masks(tmp_path / "m.safetensors")
    save_file({"X.w": torch.tensor([0.0, 1.0])}, str(tmp_path / "m2.safetensors"))
    with pytest.raises(CheckpointError, match="G.<param>"):
        load_masks(tmp_path / "m2.safetensors")


# --- variants end to end ----------------------------------------------------------------------------------------


def test_imp_g_keeps_d_dense_and_kd_logs_distillation(tmp_path, folder):
    out = tmp_path / "g"
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.032", "--variant", "IMP_G", *TINY])
    d = done(only_run(out) / "level_1")
    assert d["density_G"] == pytest.approx(0.8, abs=2e-3) and d["density_D"] == 1.0
    assert d["variant"] == "IMP_G"

    out = tmp_path / "kd"
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.032", "--variant", "IMP_GD_KD",
         *TINY])
    r = only_run(out)
    assert done(r / "level_1")["variant"] == "IMP_GD_KD"
    stats = [json.loads(line) for line in (r / "level_1" / "stats.jsonl").read_text().splitlines()]
    assert all("loss_KD" in s and s["loss_KD"] >= 0 for s in stats)
    assert not any("loss_KD" in json.loads(line) for line in (r / "level_0" / "stats.jsonl").read_text().splitlines())


def test_late_rewinding_restores_the_saved_step_and_d_reset_trained(tmp_path, folder):
    out = tmp_path / "late"
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.064", "--rewind", "step:2",
         "--d-reset", "trained", *TINY])
    r = only_run(out)
    saved = torch.load(r / "level_0" / "rewind.pt", map_location="cpu", weights_only=True)
    assert saved["step"] == 2 and saved["cur_nimg"] == 16
    masks = load_masks(r / "level_1" / "masks.safetensors")
    start = first_state(r / "level_1")  # the snapshot at kimg 0 holds the start weights of level 1
    name = next(iter(masks["G"]))
    key = name.replace(".weight", ".parametrizations.weight.original")
    expect = saved["G"][key] * masks["G"][name]
    assert torch.allclose(start["G"][key], expect)
    # D starts from the dense trained D of level 0 (masked), not from the rewind point
    d_final = state_of(r / "level_0")["D"]
    dname = next(iter(masks["D"]))
    dkey = next(k for k in d_final if k.startswith(dname.replace(".weight", "")) and k.endswith("original"))
    assert torch.allclose(start["D"][dkey], d_final[dkey] * masks["D"][dname])
    assert not torch.allclose(start["D"][dkey], saved["D"][dkey] * masks["D"][dname])


def test_rewind_after_end_and_bad_branch_are_clear(tmp_path, folder):
    out = run(["ticket", "--outdir", tmp_path, "--data", folder, "--kimg", "0.032", "--rewind", "kimg:1", *TINY],
              expect=2)
    assert "after the end of training" in out
    out = run(["ticket", "--outdir", tmp_path, "--data", folder, "--kimg", "0.032", "--branches", "transfer", *TINY],
              expect=2)
    assert "degan branch" in out


def test_branches_have_the_right_mask_and_init(tmp_path, folder):
    out = tmp_path / "b"
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.032",
         "--branches", "random_ticket,random_mask,finetune", *TINY])
    r = only_run(out)
    init = torch.load(r / "init.pt", map_location="cpu", weights_only=True)
    level_masks = load_masks(r / "level_1" / "masks.safetensors")
    name = next(iter(level_masks["G"]))
    key = name.replace(".weight", ".parametrizations.weight.original")

    def start_and_masks(branch):
        st = r / f"level_1_{branch}"
        assert done(st)["branch"] == branch and done(st)["source_level"] == 1
        return first_state(st), load_masks(st / "masks.safetensors")

    # random ticket: same mask, other init
    s, m = start_and_masks("random_ticket")
    assert all(torch.equal(m["G"][k], level_masks["G"][k]) for k in m["G"])
    assert not torch.allclose(s["G"][key], init["G"][key] * level_masks["G"][name])
    # random mask: same per-layer counts, other positions, same init
    s, m = start_and_masks("random_mask")
    assert all(int(m["G"][k].sum()) == int(level_masks["G"][k].sum()) for k in m["G"])
    assert not torch.equal(m["G"][name], level_masks["G"][name])
    assert torch.allclose(s["G"][key], init["G"][key] * m["G"][name])
    # finetune: level 1's mask on level 0's trained weights
    s, m = start_and_masks("finetune")
    trained = state_of(r / "level_0")["G"][key]
    assert torch.allclose(s["G"][key], trained * level_masks["G"][name])
    report = (r / "report.md").read_text()
    assert "random_ticket" in report and "finetune" in report


def test_transfer_branch_and_its_errors(tmp_path, folder):
    out = tmp_path / "t"
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.032", *TINY])
    r = only_run(out)
    other = make_folder(tmp_path / "other", n=10, size=(16, 16), seed=1)
    gray = make_folder(tmp_path / "gray", n=10, size=(16, 16), mode="L", seed=2)
    big = make_folder(tmp_path / "big", n=10, size=(24, 24), seed=3)
    res = run(["branch", r / "level_1", "transfer", "--no-progress"], expect=2)
    assert "--data" in res
    res = run(["branch", r / "level_1", "transfer", "--data", gray, "--no-progress"], expect=2)
    assert "grayscale" in res and "--adapt" in res
    res = run(["branch", r / "level_1", "transfer", "--data", big, "--no-progress"], expect=2)
    assert "16 px" in res and "--adapt" in res
    run(["branch", r / "level_1", "transfer", "--data", other, "--init", "trained", "--no-progress"])
    (st,) = [p for p in r.iterdir() if p.name.startswith("level_1_transfer-")]
    d = done(st)
    assert d["transfer_init"] == "trained" and d["density_G"] == pytest.approx(0.8, abs=2e-3)
    assert json.loads((st / "subset.json").read_text())["num_selected"] == 10
    res = run(["branch", r / "level_0", "finetune", "--no-progress"], expect=2)
    assert "k >= 1" in res


def test_dense_level_shared_between_variants(tmp_path, folder):
    out = tmp_path / "s"
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "0", "--kimg", "0.032", *TINY])
    src = only_run(out)
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.032", "--variant", "IMP_G",
         "--dense-from", src, *TINY])
    (g_run,) = [p for p in out.iterdir() if p.name.startswith("ticket-") and p != src]
    assert (g_run / "level_0" / "done.json").read_bytes() == (src / "level_0" / "done.json").read_bytes()
    assert done(g_run / "level_1")["density_D"] == 1.0
    # a re-run accepts the shared level; another training config is refused
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.032", "--variant", "IMP_G",
         "--dense-from", src, *TINY])
    res = run(["ticket", "--outdir", out, "--data", folder, "--levels", "1", "--kimg", "0.064", "--variant", "IMP_G",
               "--dense-from", src, *TINY], expect=2)
    assert "another config" in res and "total_kimg" in res


def test_channel_branch_and_compact_export_from_the_cli(tmp_path, folder):
    from degan.export import load_compact, load_stage_generator

    out = tmp_path / "c"
    run(["ticket", "--outdir", out, "--data", folder, "--levels", "0", "--kimg", "0.032", *TINY])
    r = only_run(out)
    run(["branch", r / "level_0", "channel", "--prune-fraction", "0.5", "--slim-kimg", "0.016", "--no-progress"])
    d = done(r / "level_0_channel")
    assert 0 < d["flops_ratio"] < 1 and d["params_G_compact"] < d["params_G_dense"]
    res = run(["export", r, "--compact", "--out", tmp_path / "exp"])
    assert "level_0_channel" in res
    G_compact = load_compact(tmp_path / "exp" / "level_0_channel")
    G_stage = load_stage_generator(r / "level_0_channel")
    z = torch.randn(4, G_stage.z_dim)
    with torch.no_grad():
        assert torch.allclose(G_compact.eval()(z), G_stage(z), atol=1e-5)
    assert sum(p.numel() for p in G_compact.parameters()) == d["params_G_compact"]
    assert not any("mask" in k for k in G_compact.state_dict())
    run(["generate", r / "level_0_channel", "--seeds", "0-3", "--grid", tmp_path / "c.png"])
    # without flags: the plain generator, a torch.export program that loads without degan, and how to load both
    run(["export", r / "level_0", "--out", tmp_path / "x"])
    G_ts = torch.export.load(str(tmp_path / "x" / "generator.pt2")).module()
    with torch.no_grad():
        G0 = load_stage_generator(r / "level_0")
        assert torch.allclose(G_ts(z), G0(z), atol=1e-5) and G_ts(torch.randn(7, G0.z_dim)).shape[0] == 7
    text = (tmp_path / "x" / "LOADING.md").read_text()
    assert "torch.export.load('x/generator.pt2').module()" in text and "load_compact('x')" in text
