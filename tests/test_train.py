"""Training loop: checkpoint round trip, bit-identical resume, NaN guard, masks through training."""

import pytest
import torch

from degan.augment import build_augment
from degan.errors import CheckpointError, TrainingDivergedError
from degan.losses import LOSSES, GANObjective
from degan.models import create_model
from degan.pruning import add_masks, get_mask, ones_like_mask, prune_global_magnitude, raw_weight, set_mask
from degan.train import Snapshot, Trainer, latest_checkpoint, load_checkpoint, make_state, save_checkpoint


def pair(seed=0, width=0.125):
    torch.manual_seed(seed)
    return create_model("dcgan", resolution=16, img_channels=3, width=width, z_dim=16,
                        pre_sn_hook=lambda n: add_masks(n))


def data(n=24):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def trainer(state, kimg, callbacks=()):
    return Trainer(state, data(), GANObjective("hinge", build_augment("diffaug:color,translation,cutout")),
                   total_kimg=kimg, batch_D=8, batch_G=8, n_dis=2, ema_decay=0.9, mirror=True,
                   callbacks=callbacks)


def fresh_state(prune=False):
    G, D = pair()
    if prune:
        set_mask(G, prune_global_magnitude(G, ones_like_mask(G), 0.5))
        set_mask(D, prune_global_magnitude(D, ones_like_mask(D), 0.5))
    return make_state(G, D, lr_G=2e-3, lr_D=2e-3, betas=(0.0, 0.9), seed=3)


def assert_same(sd1, sd2):
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k


def test_losses_match_spec():
    real, fake = torch.tensor([2.0, -0.5]), torch.tensor([0.3, -2.0])
    hinge = LOSSES.get("hinge")
    lr, lf = hinge.d_loss(real, fake)
    assert lr.item() == pytest.approx((0 + 1.5) / 2) and lf.item() == pytest.approx((1.3 + 0) / 2)
    assert hinge.g_loss(fake).item() == pytest.approx(-(0.3 - 2.0) / 2)
    ns = LOSSES.get("nonsaturating")
    sp = torch.nn.functional.softplus
    assert ns.d_loss(real, fake)[0].item() == pytest.approx(sp(-real).mean().item())
    assert ns.g_loss(fake).item() == pytest.approx(sp(-fake).mean().item())


def test_counts_real_images_and_steps():
    state = fresh_state()
    trainer(state, 0.064).run()
    assert state.cur_nimg == 64 and state.step == 4  # 4 iterations x 2 D steps x 8 reals


@pytest.mark.parametrize("prune", [False, True])
def test_resume_is_bit_identical(tmp_path, prune):
    full = fresh_state(prune)
    trainer(full, 0.096).run()

    half = fresh_state(prune)
    trainer(half, 0.048).run()
    save_checkpoint(tmp_path / "c.pt", {"state": half.state_dict()})
    del half
    resumed = fresh_state(prune)
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt")["state"])
    assert resumed.cur_nimg == 48
    trainer(resumed, 0.096).run()
    assert resumed.step == full.step
    for net in ("G", "D", "G_ema"):
        assert_same(getattr(full, net).state_dict(), getattr(resumed, net).state_dict())
    if prune:
        for k, m in get_mask(resumed.G).items():
            mod = dict(resumed.G.named_modules())[k.rsplit(".", 1)[0]]
            assert (raw_weight(mod)[~m] == 0).all()


def test_checkpoint_loads_weights_only_and_rejects_other_model(tmp_path):
    state = fresh_state()
    trainer(state, 0.016).run()
    path = save_checkpoint(tmp_path / "c.pt", {"state": state.state_dict(), "config": {"a": [1, None]}})
    raw = torch.load(path, weights_only=True)
    assert raw["state"]["cur_nimg"] == 16 and raw["config"] == {"a": [1, None]}
    G, D = pair(width=1.0)
    other = make_state(G, D, lr_G=1e-3, lr_D=1e-3, betas=(0.0, 0.9))
    with pytest.raises(CheckpointError, match="does not fit"):
        other.load_state_dict(raw["state"])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")


class NaNObjective(GANObjective):
    def __init__(self, at_step):
        super().__init__("hinge")
        self.calls, self.at = 0, at_step

    def g_loss(self, G, D, z, generator=None):
        self.calls += 1
        loss, stats = super().g_loss(G, D, z, generator)
        return (loss * float("nan") if self.calls >= self.at else loss), stats


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    state = fresh_state()
    snap = Snapshot(tmp_path / "ck", tmp_path / "s", snap_kimg=0.016, meta={}, grid_z=torch.randn(4, 16), keep=5)
    t = Trainer(state, data(), NaNObjective(at_step=4), total_kimg=1, batch_D=8, batch_G=8, n_dis=1,
                callbacks=[snap])
    with pytest.raises(TrainingDivergedError, match="loss_G became nan"):
        t.run()
    last = latest_checkpoint(tmp_path / "ck")
    good = load_checkpoint(last)["state"]
    assert good["step"] == 2  # snapshots at 16 imgs (step 2); step 4 diverged before the next one
    for v in good["G"].values():
        assert torch.isfinite(v.float()).all()


def test_atomic_writes_leave_no_temp_files_and_normal_permissions(tmp_path):
    import os

    from degan.fileio import atomic_path, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    assert oct((tmp_path / "a.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash while writing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert os.path.exists(tmp_path / "a.json")


def _umask():
    import os

    m = os.umask(0)
    os.umask(m)
    return m
