"""Mixed precision (degan.train.precision): bf16 autocast on CPU for every model family, fp16 guards, loss
scaling, the NaN guard, precision records in checkpoints, and the CPU speed options."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from degan.cli import main
from degan.errors import CheckpointError, TrainingDivergedError
from degan.losses import GANObjective
from degan.models import create_model, list_models
from degan.pruning import add_masks
from degan.train import Trainer, make_state
from degan.train.precision import (LossScaler, Precision, _scaled, apply_speed_options, check_resume,
                                   configure_adam, resolve_precision)

TINY_CLI = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
            "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016", "--set", "train.keep_checkpoints=10",
            "--set", "eval.monitor_every_kimg=null", "--data", "faces100"]

# smallest options per model family; unknown (newly registered) models try these in order
CANDIDATES = [dict(resolution=16, width=0.25, z_dim=16), dict(resolution=32, width=0.125, z_dim=16),
              dict(resolution=32, width=0.125), dict(resolution=32, width=0.25), dict(resolution=32), {}]


def tiny_model(name: str):
    errors = []
    for kw in CANDIDATES:
        try:
            torch.manual_seed(0)
            G, D = create_model(name, pre_sn_hook=add_masks, **kw)
            return G, D, kw.get("resolution", getattr(G, "resolution", 32))
        except (TypeError, ValueError) as e:
            errors.append(str(e))
    pytest.skip(f"{name}: no tiny configuration builds ({errors[-1][:120]})")


def trainer_for(G, D, res, precision: Precision | None, objective=None, kimg=0.012, batch=4):
    state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))
    if precision is not None:
        state.extras["precision"] = precision
    ch = getattr(G, "img_channels", 3)
    images = torch.randint(0, 256, (8, ch, res, res), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    objective = objective or GANObjective("hinge")
    if precision is not None:
        objective = precision.wrap(objective)
    return Trainer(state, images, objective, total_kimg=kimg, batch_D=batch, batch_G=batch, n_dis=1)


@pytest.mark.parametrize("name", list_models())
def test_bf16_autocast_trains_every_model_without_nan(name, request):
    G, D, res = tiny_model(name)
    if res > 64:
        pytest.skip(f"{name}: smallest resolution {res} px is too large for a fast CPU test")
    seen = []
    hook = next(m for m in D.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    hook.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    tr = trainer_for(G, D, res, Precision("bf16", "cpu"))
    stats = tr.train_step()
    stats.update(tr.train_step())
    assert torch.bfloat16 in seen  # autocast was on in the loop
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    for p in (*tr.state.G.parameters(), *tr.state.D.parameters()):
        assert p.dtype == torch.float32 and torch.isfinite(p).all()


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Precision("fp16", "cpu")
    with pytest.raises(ValueError, match="choose one of"):
        resolve_precision("fp8", "cpu")
    res = CliRunner().invoke(main, ["train", "--outdir", str(tmp_path), *TINY_CLI, "--kimg", "0.016",
                                    "--device", "cpu", "--precision", "fp16"])
    assert res.exit_code == 2 and "fp16 needs a CUDA device" in res.output


def test_scaled_loss_value_and_gradient():
    x = torch.tensor([1.5, -2.0], requires_grad=True)
    loss = (x ** 2).sum()
    out = _scaled(loss, 1024.0)
    assert out.item() == loss.item()
    out.backward()
    assert torch.equal(x.grad, 1024.0 * 2 * x.detach())


def test_loss_scaler_skips_inf_steps_and_backs_off():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    sc = LossScaler(init_scale=8.0, growth_interval=2)
    p.grad = torch.tensor([8.0, float("inf"), 8.0])
    assert not sc.unscale_([p]) and p.grad is None and sc.scale == 4.0 and sc.skipped == 1
    opt.step()  # no gradient: Adam skips the parameter
    assert torch.equal(p.detach(), torch.ones(3)) and not opt.state
    for _ in range(2):
        p.grad = torch.full((3,), 4.0)
        assert sc.unscale_([p]) and torch.equal(p.grad, torch.ones(3))
    assert sc.scale == 8.0  # grew after growth_interval finite steps


def test_loss_scaling_path_matches_unscaled_training_and_skips_are_not_divergence():
    def run(scalers: bool, poison: bool = False):
        torch.manual_seed(0)
        G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=16)
        prec = Precision("fp32", "cpu")
        if scalers:  # the fp16 machinery (loss scaling + unscale/skip) on CPU in fp32 arithmetic
            prec.scalers = {"G": LossScaler(), "D": LossScaler()}
        tr = trainer_for(G, D, 16, prec)
        if poison:  # the first D step overflows: its gradients are inf -> that step is skipped, training goes on
            hit = []

            def once_inf(g):
                if hit:
                    return g
                hit.append(1)
                return g * float("inf")

            next(tr.state.D.parameters()).register_hook(once_inf)
        tr.run()
        return tr
    plain, scaled = run(False), run(True)
    for a, b in zip(plain.state.G.parameters(), scaled.state.G.parameters()):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    poisoned = run(True, poison=True)  # no TrainingDivergedError
    assert poisoned.state.extras["precision"].scalers["D"].skipped == 1
    assert poisoned.state.extras["precision"].scalers["D"].scale == 2.0 ** 15
    assert all(torch.isfinite(p).all() for p in poisoned.state.D.parameters())


def test_nan_loss_still_stops_training_under_bf16():
    class NaNObjective(GANObjective):
        def d_loss(self, *a, **k):
            loss, stats = super().d_loss(*a, **k)
            return loss * float("nan"), stats

    G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=16)
    tr = trainer_for(G, D, 16, Precision("bf16", "cpu"), objective=NaNObjective("hinge"))
    with pytest.raises(TrainingDivergedError, match="loss_D became nan"):
        tr.run()


def test_checkpoint_records_precision_and_resume_mismatch(tmp_path, monkeypatch):
    import degan.train.precision as prec

    runner = CliRunner()
    args = ["train", "--outdir", str(tmp_path), *TINY_CLI, "--kimg", "0.064", "--device", "cpu"]
    res = runner.invoke(main, [*args, "--precision", "bf16"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (bf16_dir,) = list(tmp_path.iterdir())
    res = runner.invoke(main, args, catch_exceptions=False)  # fp32: another run, not "already finished"
    assert res.exit_code == 0 and "already finished" not in res.output, res.output
    assert len(list(tmp_path.iterdir())) == 2
    ckpts = sorted((bf16_dir / "level_0" / "checkpoints").glob("ckpt-*.pt"))
    assert torch.load(ckpts[-1], weights_only=True)["state"]["extras"]["precision"]["mode"] == "bf16"

    # one folder, two precisions: `auto` resolved to bf16 on one machine and to fp32 on another
    monkeypatch.setattr("degan.lottery.techniques._AUTO_SAID", set())  # the test's reasons are not said for real
    monkeypatch.setattr(prec, "auto_precision", lambda model, device: ("bf16", "auto: bf16 (test)"))
    res = runner.invoke(main, [*args, "--precision", "auto"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (auto_dir,) = [d for d in tmp_path.iterdir() if "precision: auto" in (d / "config.yaml").read_text()]
    stage = auto_dir / "level_0"
    ckpts = sorted((stage / "checkpoints").glob("ckpt-*.pt"))
    (stage / "done.json").unlink()
    ckpts[-1].unlink()
    monkeypatch.setattr(prec, "auto_precision", lambda model, device: ("fp32", "auto: fp32 (test)"))
    res = runner.invoke(main, [*args, "--precision", "auto", "--resume", "latest"])
    assert res.exit_code == 2 and "trained with precision bf16" in res.output and "--force" in res.output
    res = runner.invoke(main, [*args, "--precision", "auto", "--resume", "latest", "--force"],
                        catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert json.loads((stage / "done.json").read_text())["real_images_shown"] == 64
    with pytest.raises(CheckpointError):
        check_resume({"extras": {}}, "bf16")  # no record = fp32
    check_resume({"extras": {"precision": {"mode": "bf16"}}}, "bf16")


def test_speed_options_on_cpu():
    G, D = create_model("dcgan", resolution=16, width=0.25, z_dim=16, pre_sn_hook=add_masks)
    tr = trainer_for(G, D, 16, None)
    apply_speed_options(tr.state, channels_last=True, adam="foreach")
    assert all(g["foreach"] for g in tr.state.opt_D.param_groups)
    w = next(p for p in tr.state.D.parameters() if p.dim() == 4)
    assert w.is_contiguous(memory_format=torch.channels_last)
    tr.run()
    assert all(torch.isfinite(p).all() for p in tr.state.G.parameters())
    with pytest.raises(ValueError, match="fused needs every parameter on CUDA"):
        configure_adam(tr.state.opt_G, "fused")
    with pytest.raises(ValueError, match="choose one of"):
        configure_adam(tr.state.opt_G, "turbo")
