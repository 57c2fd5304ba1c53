"""D overfitting monitor: accuracy of a hand-built memorising D, the warning, the callback in a tiny run."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from degan.cli import main
from degan.train.monitor import (OverfitMonitor, d_logits, d_statistics, heldout_reals, measure,
                                 memorisation_warning, plot_monitor)
from degan.train.loop import images_to_float

TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
        "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016"]


class MemorisingD(nn.Module):
    """+1 for an image of the training set it stores, -1 for anything else."""

    def __init__(self, train_uint8):
        super().__init__()
        self.register_buffer("known", images_to_float(train_uint8).flatten(1))

    def forward(self, x, c=None):
        d = torch.cdist(x.flatten(1), self.known).min(dim=1).values
        return torch.where(d < 1e-4, 1.0, -1.0)


class TinyG(nn.Module):
    z_dim = 4

    def forward(self, z):
        return torch.tanh(z[:, :1, None, None].expand(-1, 3, 8, 8) + 0.5)


def _imgs(n, seed):
    return torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_memorising_D_gives_train_1_heldout_0_and_warns():
    train, held = _imgs(20, 0), _imgs(15, 1)
    D = MemorisingD(train)
    rec = measure(D, TinyG(), train, held, torch.randn(10, 4), batch_size=7)
    assert rec["acc_train"] == 1.0 and rec["acc_heldout"] == 0.0 and rec["gap"] == 1.0
    assert rec["r_t"] == 1.0 and rec["logit_train"] == 1.0 and rec["logit_heldout"] == -1.0
    assert rec["acc_fake"] == 1.0 and rec["num_train"] == 20 and rec["num_heldout"] == 15 and rec["num_fake"] == 10
    w = memorisation_warning(rec["acc_train"], rec["acc_heldout"])
    assert w is not None and "memorising" in w and "100 %" in w and "0 %" in w


def test_generalising_D_does_not_warn():
    train, held = _imgs(20, 0), _imgs(15, 1)

    class BrightIsReal(nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3)) + 10.0  # every real image is "real"

    rec = measure(BrightIsReal(), None, train, held)
    assert rec["acc_train"] == rec["acc_heldout"] == 1.0 and rec["acc_fake"] is None
    assert memorisation_warning(rec["acc_train"], rec["acc_heldout"]) is None
    assert memorisation_warning(0.95, None) is None  # nothing held out: no claim
    assert memorisation_warning(0.95, 0.8) is None and memorisation_warning(0.95, 0.6) is not None
    assert memorisation_warning(0.6, 0.0) is None  # D is not confident on its training data either


def test_d_statistics_and_zero_logit_counts_wrong():
    s = d_statistics(torch.tensor([1.0, -2.0, 0.0, 3.0]), real=True)
    assert s["acc"] == 0.5 and s["r_t"] == pytest.approx(0.25) and s["logit"] == pytest.approx(0.5)
    assert d_statistics(torch.tensor([-1.0, 0.0]), real=False)["acc"] == 0.5
    with pytest.raises(ValueError):
        d_statistics(torch.zeros(0), real=True)


def test_d_logits_passes_labels_to_a_conditional_D():
    class CondD(nn.Module):
        def forward(self, x, c=None):
            return (c.float() if c is not None else torch.zeros(x.shape[0]))[:, None]  # [N, 1] is flattened

    x = torch.zeros(3, 3, 8, 8)
    assert d_logits(CondD(), x).tolist() == [0, 0, 0]
    assert d_logits(CondD(), x, torch.tensor([0, 1, 2])).tolist() == [0, 1, 2]


def test_measure_restores_modes_and_rejects_bad_input():
    D = MemorisingD(_imgs(4, 0)).train()
    measure(D, None, _imgs(4, 0))
    assert D.training
    with pytest.raises(ValueError, match="uint8"):
        measure(D, None, images_to_float(_imgs(4, 0)))
    with pytest.raises(ValueError, match="latents"):
        measure(D, TinyG(), _imgs(4, 0))
    with pytest.raises(ValueError, match="every_kimg"):
        OverfitMonitor("m.jsonl", 0, _imgs(4, 0))


def test_plot_monitor_writes_png(tmp_path):
    path = tmp_path / "monitor.jsonl"
    recs = [{"kimg": k, "cur_nimg": k * 1000, "acc_train": 0.5 + 0.1 * k, "acc_heldout": 0.5 - 0.1 * k,
             "acc_fake": 0.6, "logit_train": 0.1 * k, "logit_heldout": -0.1 * k, "logit_fake": -0.2, "r_t": 0.1 * k,
             "num_heldout": 10, "warning": "w" if k > 2 else None} for k in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = plot_monitor(path, tmp_path / "m.png")
    assert Image.open(out).size[0] > 500
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no D-monitor"):
        plot_monitor(tmp_path / "empty.jsonl", tmp_path / "e.png")


def _folder(d, n=12):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def test_heldout_reals_fall_back_to_the_rest_of_the_training_split(tmp_path):
    folder = _folder(tmp_path / "imgs")
    held, where = heldout_reals(str(folder), resolution=16, channels=3, resize="center_crop",
                                train_indices=np.arange(8), num=100)
    assert where == "training split outside the subset" and held.shape == (4, 3, 16, 16)
    held, where = heldout_reals(str(folder), resolution=16, channels=3, resize="center_crop",
                                train_indices=np.arange(12), num=100)
    assert held is None and where == "none"


def _train(outdir, folder, monitor):
    res = CliRunner().invoke(main, [str(a) for a in ["train", "--outdir", outdir, "--data", folder, "--kimg", "0.048",
                                                     "--subset", "8", *TINY, "--set",
                                                     f"eval.monitor_every_kimg={monitor}"]],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run,) = list(outdir.iterdir())
    return run / "level_0", res.output


def test_monitor_in_a_run_logs_and_does_not_change_training(tmp_path):
    folder = _folder(tmp_path / "imgs")
    stage, out = _train(tmp_path / "a", folder, 0.016)
    recs = [json.loads(x) for x in (stage / "monitor.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in recs] == [0.0, 0.016, 0.032, 0.048]
    assert all(r["num_train"] == 8 and r["num_heldout"] == 4 and 0 <= r["acc_train"] <= 1 for r in recs)
    assert (stage / "monitor.png").is_file() and "held-out reals" in out
    plain, _ = _train(tmp_path / "b", folder, "null")
    assert not (plain / "monitor.jsonl").exists()
    a, b = load_file(stage / "G_ema.safetensors"), load_file(plain / "G_ema.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the monitor draws no training randomness, changes no state


def test_a_growing_D_scores_reals_as_training_shows_them_mid_fade():
    from degan.models import create_model
    from degan.models.progan import progressive_view

    torch.manual_seed(0)
    _, D = create_model("progan", resolution=16, width=1 / 32, z_dim=8)
    D.set_growth(8, 0.3)  # fading 8x8 in: training shows D pooled, blended reals
    reals = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    rec = measure(D, None, reals)
    with torch.no_grad():
        want = D(progressive_view(images_to_float(reals), 8, 0.3)).flatten()
        raw = D(images_to_float(reals)).flatten()
    assert rec["logit_train"] == pytest.approx(want.mean().item(), abs=1e-6)
    assert abs(want.mean().item() - raw.mean().item()) > 1e-4  # the raw reals would have scored otherwise
