"""The NaN guard end to end: a NaN injected into the G loss at a chosen step stops `degan train` with one error line
that names the last good checkpoint and the command that continues from it; that checkpoint is intact; and
`--set optim.lr_*=<lower> --resume CKPT` trains past the step in a new run folder (docs/troubleshooting.md)."""

import json
import math

import torch
from click.testing import CliRunner
from conftest import random_image_folder

from degan.cli import main
from degan.losses import GANObjective
from degan.train.checkpoint import load_checkpoint

NAN_AT = 15  # the 15th G loss (G step 14, 120 images shown) becomes NaN
SNAP = 48  # checkpoints every 48 images: 0, 48, 96 -> the last good one is ckpt-000000096.pt (G step 12)


def _args(data, outdir, *extra):
    return ["train", "--data", str(data), "--outdir", str(outdir), "--model", "dcgan", "--width", "0.25",
            "--resolution", "16", "--batch", "8", "--kimg", "0.2", "--snap", str(SNAP / 1000), "--metrics", "none",
            "--no-progress", "--set", "train.log_kimg=0.016", *extra]


def _inject_nan(monkeypatch, at):
    """From the ``at``-th call on, GANObjective.g_loss returns NaN (in this process)."""
    orig, calls = GANObjective.g_loss, {"n": 0}

    def g_loss(self, *args, **kwargs):
        loss, stats = orig(self, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] >= at else loss), stats

    monkeypatch.setattr(GANObjective, "g_loss", g_loss)
    return calls


def _invoke(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def test_nan_stops_keeps_the_checkpoint_and_lower_lr_continues_past_it(tmp_path, monkeypatch):
    data = random_image_folder(tmp_path / "imgs", 12)
    calls = _inject_nan(monkeypatch, NAN_AT)
    res = _invoke(_args(data, tmp_path / "runs"))
    assert calls["n"] == NAN_AT  # stopped at the first NaN
    assert res.exit_code == 3, res.output  # diverged (bad input would be 2)
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    stage = run / "level_0"
    last = stage / "checkpoints" / "ckpt-000000096.pt"
    msg = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(msg) == 1, res.output
    assert "loss_G became nan at kimg 0.12 (G step 14)" in msg[0]
    assert f"Last good checkpoint: {last}" in msg[0]
    assert f"--set optim.lr_G=0.0001 --set optim.lr_D=0.0001 --resume {last}" in msg[0]
    assert "Traceback" not in res.output

    # the last good checkpoint: intact, at the step before the NaN, finite; nothing of a finished stage was written
    assert not (stage / "done.json").exists() and not (stage / "G_ema.safetensors").exists()
    assert sorted(p.name for p in (stage / "checkpoints").iterdir()) == ["ckpt-000000048.pt", "ckpt-000000096.pt"]
    good = load_checkpoint(last)["state"]
    assert good["cur_nimg"] == 96 and good["step"] == 12
    assert all(torch.isfinite(t).all() for net in ("G", "D", "G_ema") for t in good[net].values()
               if t.is_floating_point())
    assert good["opt_G"]["param_groups"][0]["lr"] == 2e-4
    before = last.read_bytes()

    # continue past the NaN from that checkpoint with half the learning rates (the NaN is gone: it was injected)
    monkeypatch.undo()
    lower = ["--set", "optim.lr_G=0.0001", "--set", "optim.lr_D=0.0001"]
    res = _invoke(_args(data, tmp_path / "runs", *lower, "--resume", str(last)))
    assert res.exit_code == 0, res.output
    assert "continuing from" in res.output and "optim.lr_G 0.0002 -> 0.0001" in res.output
    new = [p for p in (tmp_path / "runs").iterdir() if p.is_dir() and p != run]
    assert len(new) == 1  # another config hash: a new run folder; the diverged run stays as it was
    assert last.read_bytes() == before
    nstage = new[0] / "level_0"
    done = json.loads((nstage / "done.json").read_text())
    assert done["step"] == 25 and done["real_images_shown"] == 200  # trained past G step 14
    rec = json.loads((nstage / "resumed_from.json").read_text())
    assert rec["checkpoint"] == str(last.resolve()) and rec["step"] == 12 and rec["kimg"] == 0.096
    assert rec["changed"] == {"optim.lr_G": [2e-4, 1e-4], "optim.lr_D": [2e-4, 1e-4]}
    assert done["resumed_from"] == rec
    final = load_checkpoint(nstage / "checkpoints" / "ckpt-000000200.pt")["state"]
    assert final["opt_G"]["param_groups"][0]["lr"] == 1e-4 and final["opt_D"]["param_groups"][0]["lr"] == 1e-4
    assert all(torch.isfinite(t).all() for t in final["G_ema"].values() if t.is_floating_point())
    # the logs run from the start: the source's records up to the checkpoint, then the continued training's, once
    stats = [json.loads(x) for x in (nstage / "stats.jsonl").read_text().splitlines()]
    assert [r["cur_nimg"] for r in stats] == list(range(16, 201, 16)) + [200] * (200 % 16 != 0)
    assert all(math.isfinite(r["loss_G"]) for r in stats)

    # the same command again: the stage is finished and is skipped
    res = _invoke(_args(data, tmp_path / "runs", *lower, "--resume", str(last)))
    assert res.exit_code == 0 and "already finished" in res.output


def test_resume_from_a_checkpoint_refuses_another_config(tmp_path):
    data = random_image_folder(tmp_path / "imgs", 12)
    res = _invoke(_args(data, tmp_path / "a", "--set", "train.snap_kimg=0.016", "--kimg", "0.032"))
    assert res.exit_code == 0, res.output
    (ckpt,) = [p for p in (tmp_path / "a").rglob("ckpt-000000032.pt")]
    res = _invoke(_args(data, tmp_path / "b", "--kimg", "0.032", "--seed", "5", "--resume", str(ckpt)))
    assert res.exit_code == 2
    assert "train.seed: checkpoint 0 vs this run 5" in res.output and "only the optimizer settings" in res.output
    res = _invoke(_args(data, tmp_path / "b", "--kimg", "0.032", "--resume", str(tmp_path / "nope.pt")))
    assert res.exit_code == 2 and "no such checkpoint file" in res.output
    res = _invoke(["ticket", *_args(data, tmp_path / "b", "--resume", str(ckpt))[1:]])
    assert res.exit_code == 2 and "is for `degan train`" in res.output


def test_a_snapshot_refuses_non_finite_weights(tmp_path):
    """A finite loss can still leave NaN weights after the step; the checkpoint of that step is not written."""
    import pytest

    from degan.augment import build_augment
    from degan.errors import TrainingDivergedError
    from degan.models import create_model
    from degan.pruning import add_masks
    from degan.train import Snapshot, Trainer, latest_checkpoint, make_state
    from degan.train.loop import Callback

    torch.manual_seed(0)
    G, D = create_model("dcgan", resolution=16, img_channels=3, width=0.125, z_dim=16,
                        pre_sn_hook=lambda n: add_masks(n))
    state = make_state(G, D, lr_G=2e-4, lr_D=2e-4, betas=(0.0, 0.9))

    class Poison(Callback):
        def on_step_end(self, trainer, stats):
            if trainer.state.step == 3:  # the weights go bad after the 3rd step, before its snapshot
                next(trainer.state.G.parameters()).data.fill_(float("nan"))

    snap = Snapshot(tmp_path / "ck", tmp_path / "s", snap_kimg=0.008, meta={}, grid_z=torch.randn(4, 16), keep=10)
    images = torch.randint(0, 256, (16, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    t = Trainer(state, images, GANObjective("hinge", build_augment("none")), total_kimg=0.08, batch_D=8, batch_G=8,
                callbacks=[Poison(), snap])
    with pytest.raises(TrainingDivergedError, match=r"weights of G .* became NaN or inf at kimg 0.02 \(G step 3\)"):
        t.run()
    assert latest_checkpoint(tmp_path / "ck").name == "ckpt-000000016.pt"
