"""Class-conditional training end to end: labels from the data to G, D, the losses, every objective wrapper,
evaluation sampling and sample grids; conditional / unconditional modes; bad input."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from degan.augment import build_augment
from degan.augment.ada import ADAController
from degan.augment.advaug import AdvAugObjective, AdvAugSettings
from degan.augment.lecam import LeCam
from degan.cli import main
from degan.config import resolve
from degan.errors import CheckpointError, ConfigError, DeganError
from degan.losses import DistillationObjective, GANObjective, ObjectiveWrapper
from degan.lottery.runner import check_class_count, grid_inputs, resolve_classes, sample_fn_for
from degan.models import create_model
from degan.pruning.slimming import GeneratorDistillation
from degan.train.loop import Trainer
from degan.train.regen import DynamicPruningObjective
from degan.train.state import make_state

TINY = {"dcgan": dict(width=0.25, resolution=16), "sngan32": dict(width=0.05), "biggan": dict(width=0.05)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread: with two, every small op waits for the other OpenMP thread, which on
    a busy 2-core machine made these tests ~10x slower (measured: a 4-step BigGAN CLI run 4 s vs 21-54 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


@pytest.fixture
def folder(tmp_path):
    """12 random 20x24 images in two class subfolders (labels 0, 1)."""
    d = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(12):
        sub = d / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    return d


# ---------------------------------------------------------------------------------------------------------------------
# models


@pytest.mark.parametrize("name", sorted(TINY))
def test_conditional_outputs_depend_on_the_label(name):
    torch.manual_seed(0)
    G, D = create_model(name, num_classes=3, **TINY[name])
    G.eval(), D.eval()
    z = torch.randn(4, G.z_dim)
    with torch.no_grad():
        for p in D.out.embed.parameters():  # make the projection term visibly non-zero
            p.add_(torch.randn_like(p))
        a, b = G(z, torch.zeros(4, dtype=torch.long)), G(z, torch.full((4,), 2, dtype=torch.long))
        assert (a - b).abs().max() > 1e-4
        x = a
        da, db = D(x, torch.zeros(4, dtype=torch.long)), D(x, torch.full((4,), 2, dtype=torch.long))
        assert (da - db).abs().max() > 1e-4
    with pytest.raises(ValueError, match="conditional"):
        G(z)
    with pytest.raises(ValueError, match="conditional"):
        D(x)


@pytest.mark.parametrize("name", sorted(TINY))
def test_unconditional_mode_has_no_class_parameters(name):
    G, D = create_model(name, num_classes=0, **TINY[name])
    keys = list(G.state_dict()) + list(D.state_dict())
    assert not any("embed" in k or "shared" in k for k in keys)
    x = G(torch.randn(2, G.z_dim))
    assert D(x).shape == (2,)


# ---------------------------------------------------------------------------------------------------------------------
# labels reach the losses


class SpyG(nn.Module):
    """z [N, 2] -> images [N, 1, 4, 4] filled with the label (so the label is readable from the image)."""

    def __init__(self, k=3):
        super().__init__()
        self.num_classes, self.z_dim, self.w = k, 2, nn.Parameter(torch.zeros(()))
        self.seen = []

    def forward(self, z, c=None):
        self.seen.append(None if c is None else c.clone())
        return (c.float() if c is not None else torch.zeros(z.shape[0]))[:, None, None, None].expand(-1, 1, 4, 4) \
            + 0 * self.w


class SpyD(nn.Module):
    """Records (image label read from pixels, label given) pairs; score = w * c."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))
        self.seen = []

    def forward(self, x, c=None):
        self.seen.append((x[:, 0, 0, 0].detach().clone(), None if c is None else c.clone()))
        return self.w * (0.0 if c is None else c.float()) + x.mean(dim=(1, 2, 3))


def test_labels_reach_G_and_D_in_the_objective():
    G, D = SpyG(), SpyD()
    real = torch.full((5, 1, 4, 4), 1.0) * torch.arange(5.0)[:, None, None, None] % 3
    real_c, gen_c = torch.arange(5) % 3, torch.tensor([2, 2, 1, 0, 1])
    obj = GANObjective("hinge")
    loss_c, _ = obj.d_loss(G, D, real, torch.zeros(5, 2), c=(real_c, gen_c))
    assert torch.equal(G.seen[-1], gen_c)
    (x_real, c_real), (x_fake, c_fake) = D.seen[-2:]
    assert torch.equal(c_real, real_c) and torch.equal(c_fake, gen_c)
    assert torch.equal(x_fake.long(), gen_c)  # the fakes D saw were made for these labels
    assert torch.equal(obj.last_d_pass["real_c"], real_c)
    loss_g, _ = obj.g_loss(G, D, torch.zeros(5, 2), c=gen_c)
    assert torch.equal(G.seen[-1], gen_c) and torch.equal(D.seen[-1][1], gen_c)
    # D reads c: other labels, another loss
    loss_other, _ = obj.d_loss(G, D, real, torch.zeros(5, 2), c=(real_c, torch.zeros(5, dtype=torch.long)))
    assert not torch.isclose(loss_c, loss_other)


def _wrapped(objective, kind):
    if kind == "ada":
        return ADAController(build_augment("ada:bgc:p=0")).wrap(objective)
    if kind == "lecam":
        return LeCam(weight=0.3, start_step=0).wrap(objective)
    if kind == "kd":
        return DistillationObjective(objective, SpyD())
    if kind == "rg":
        return DynamicPruningObjective(objective, lam=0.0)
    if kind == "slim":
        return GeneratorDistillation(objective, SpyG(), weight=1.0)
    if kind == "base":
        return ObjectiveWrapper(objective)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["ada", "lecam", "kd", "rg", "slim", "base"])
def test_every_objective_wrapper_passes_labels_through(kind):
    G, D = SpyG(), SpyD()
    obj = _wrapped(GANObjective("hinge"), kind)
    real = torch.zeros(4, 1, 4, 4)
    real_c, gen_c = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 2, 2])
    obj.d_loss(G, D, real, torch.zeros(4, 2), None, c=(real_c, gen_c))
    given = [c for _, c in D.seen]
    assert any(c is not None and torch.equal(c, real_c) for c in given)
    assert any(c is not None and torch.equal(c, gen_c) for c in given)
    assert not any(c is None for c in given)
    D.seen.clear()
    obj.g_loss(G, D, torch.zeros(4, 2), None, c=gen_c)
    assert D.seen and all(torch.equal(c, gen_c) for _, c in D.seen)


def test_distillation_teacher_scores_with_the_labels():
    teacher = SpyD()
    obj = DistillationObjective(GANObjective("hinge"), teacher)
    real_c, gen_c = torch.tensor([0, 1]), torch.tensor([2, 2])
    obj.d_loss(SpyG(), SpyD(), torch.zeros(2, 1, 4, 4), torch.zeros(2, 2), c=(real_c, gen_c))
    assert torch.equal(teacher.seen[0][1], real_c) and torch.equal(teacher.seen[1][1], gen_c)


@pytest.mark.parametrize("direction", ["worst_case", "reference"])
def test_advaug_split_points_carry_labels(direction):
    torch.manual_seed(0)
    G, D = create_model("sngan32", num_classes=3, width=0.05)
    with torch.no_grad():
        D.out.embed.weight.add_(torch.randn_like(D.out.embed.weight))
    obj = AdvAugObjective("hinge", None, AdvAugSettings(direction=direction, split_D=2))
    real, z = torch.rand(4, 3, 32, 32) * 2 - 1, torch.randn(4, G.z_dim)
    a, _ = obj.d_loss(G, D, real, z, c=(torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)))
    b, _ = obj.d_loss(G, D, real, z, c=(torch.full((4,), 2), torch.zeros(4, dtype=torch.long)))
    assert torch.isfinite(a) and not torch.isclose(a, b)
    g, _ = obj.g_loss(G, D, z, c=torch.ones(4, dtype=torch.long))
    g.backward()
    assert G.embed.weight.grad is not None and G.embed.weight.grad[1].abs().sum() > 0
    assert G.embed.weight.grad[0].abs().sum() == 0  # only the class used got gradient
    with pytest.raises(ValueError, match="conditional"):
        obj.d_loss(G, D, real, z)  # a conditional D without labels is an error, never silently unconditional


# ---------------------------------------------------------------------------------------------------------------------
# the training loop


def _trainer(G, D, images, labels, **kw):
    state = make_state(G, D, lr_G=1e-3, lr_D=1e-3, betas=(0.0, 0.9), seed=3)
    return Trainer(state, images, GANObjective("hinge"), total_kimg=0.008, batch_D=4, batch_G=4, n_dis=1,
                   labels=labels, **kw)


def test_trainer_draws_real_labels_with_the_reals_and_uniform_fake_labels():
    G, D = SpyG(k=3), SpyD()
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1])
    images = (labels * 40).to(torch.uint8)[:, None, None, None].expand(-1, 1, 4, 4).contiguous()
    tr = _trainer(G, D, images, labels)
    for _ in range(20):
        tr.train_step()
    reals = D.seen[0::3]  # each step: D(real), D(fake) in the D step, D(fake) in the G step
    for x, c in reals:
        pixel_label = torch.round((x + 1) * 127.5 / 40).long()
        assert torch.equal(pixel_label, c)  # every real came with its own label
    fake_c = torch.cat([c for c in G.seen if c is not None])
    counts = torch.bincount(fake_c, minlength=3)
    assert counts.min() > 0 and fake_c.max() < 3  # uniform over all classes
    # fake labels come from the seeded latent stream: the same seed gives the same labels
    G2 = SpyG(k=3)
    tr2 = _trainer(G2, SpyD(), images, labels)
    for _ in range(20):
        tr2.train_step()
    assert torch.equal(torch.cat([c for c in G2.seen if c is not None]), fake_c)


def test_unconditional_training_ignores_labels_bit_identically():
    def train(labels):
        torch.manual_seed(0)
        G, D = create_model("dcgan", width=0.125, resolution=16)
        images = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8)
        tr = _trainer(G, D, images, labels)
        for _ in range(2):
            tr.train_step()
        return torch.cat([p.detach().flatten() for p in G.parameters()])

    assert torch.equal(train(None), train(torch.arange(8) % 2))


def test_trainer_rejects_missing_or_out_of_range_labels():
    G, D = SpyG(k=3), SpyD()
    images = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="no labels"):
        _trainer(G, D, images, None)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        _trainer(G, D, images, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="int64"):
        _trainer(G, D, images, torch.tensor([0, 1]))


def test_ema_start_step_copies_G_before_averaging():
    torch.manual_seed(0)
    G, D = create_model("dcgan", width=0.125, resolution=16)
    images = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8)
    tr = _trainer(G, D, images, None, ema_decay=0.9, ema_start_step=2)
    same = lambda: all(torch.equal(a, b) for a, b in zip(tr.state.G_ema.parameters(), G.parameters()))  # noqa: E731
    tr.train_step()
    tr.train_step()
    assert same()  # steps 0 and 1: G_ema = G
    tr.train_step()
    assert not same()  # step 2: averaging


# ---------------------------------------------------------------------------------------------------------------------
# evaluation sampling and grids


def test_evaluation_samples_and_grids_are_class_conditional():
    G, _ = create_model("sngan32", num_classes=10, width=0.05)
    z, c, nrow = grid_inputs(G, seed=1)
    assert nrow == 8 and torch.equal(c, torch.arange(10).repeat_interleave(8)) and z.shape == (80, G.z_dim)
    G100, _ = create_model("sngan32", num_classes=100, width=0.05)
    _, c100, _ = grid_inputs(G100, seed=1)
    assert c100.unique().numel() == 16 and c100.min() == 0 and c100.max() == 99
    Gu, _ = create_model("sngan32", width=0.05)
    zu, cu, nu = grid_inputs(Gu, seed=1)
    assert cu is None and nu is None and zu.shape == (64, Gu.z_dim)

    spy = SpyG(k=4)
    spy.z_dim = 2
    fn = sample_fn_for(spy.eval(), seed=0, device=torch.device("cpu"))
    out = fn(400)
    assert out.dtype == torch.uint8 and out.shape == (400, 1, 4, 4)
    seen = spy.seen[-1]
    assert seen is not None and torch.bincount(seen, minlength=4).min() > 60  # roughly uniform


# ---------------------------------------------------------------------------------------------------------------------
# config and bad input


def test_class_resolution_and_mismatch_errors():
    cfg = resolve(overrides={"model": {"conditional": True}})
    assert resolve_classes(cfg, np.array([0, 3, 1])).model.num_classes == 4
    assert resolve_classes(resolve(), None).model.num_classes is None  # unconditional: untouched
    with pytest.raises(DeganError, match="needs class labels"):
        resolve_classes(cfg, None)
    fixed = resolve(overrides={"model": {"conditional": True, "num_classes": 2}})
    with pytest.raises(DeganError, match="class-count mismatch.*num_classes=2.*4 classes"):
        resolve_classes(fixed, np.array([0, 3]))
    assert resolve_classes(fixed, np.array([0, 0])).model.num_classes == 2  # fewer classes present is fine
    with pytest.raises(ConfigError, match="--cond"):
        resolve(overrides={"model": {"num_classes": 3}})
    ten = resolve_classes(cfg, np.arange(10))
    with pytest.raises(CheckpointError, match="10 classes.*unconditional|unconditional.*10 classes"):
        check_class_count({"conditional": False}, ten, "the ticket")
    with pytest.raises(CheckpointError, match="made for a 5 classes model"):
        check_class_count({"conditional": True, "num_classes": 5}, ten, "the ticket")
    check_class_count({"conditional": True, "num_classes": 10}, ten, "the ticket")


def test_cli_conditional_bad_input_is_one_clear_line(tmp_path, folder):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, f in enumerate(sorted(folder.rglob("*.png"))):
        (flat / f"{i}.png").write_bytes(f.read_bytes())
    base = ["train", "--outdir", tmp_path / "runs", "--model", "sngan32", "--width", "0.05", "--resolution", "32",
            "--kimg", "0.016", "--batch", "4", "--metrics", "none", "--no-progress"]
    out = run([*base, "--data", flat, "--cond"], expect=2)
    assert "error:" in out and "needs class labels" in out
    out = run([*base, "--data", folder, "--cond", "--set", "model.num_classes=1"], expect=2)
    assert "class-count mismatch" in out
    out = run([*base, "--data", folder, "--set", "model.num_classes=2"], expect=2)
    assert "--cond" in out


def test_cli_conditional_training_generate_and_ticket_class_mismatch(tmp_path, folder):
    outdir = tmp_path / "runs"
    tiny = ["--model", "sngan32", "--width", "0.05", "--resolution", "32", "--batch", "4", "--snap", "0.016",
            "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.008", "--set", "train.n_dis=1",
            "--set", "eval.monitor_every_kimg=0.016", "--augment", "diffaug:color,translation,cutout"]
    run(["train", "--outdir", outdir, "--data", folder, "--cond", "--kimg", "0.024", *tiny])
    (run_dir,) = list(outdir.iterdir())
    cfg_text = (run_dir / "config.yaml").read_text()
    assert "conditional: true" in cfg_text and "num_classes: 2" in cfg_text
    assert json.loads((run_dir / "data.json").read_text())["num_classes"] == 2
    for level in ("level_0",):
        stats = [json.loads(x) for x in (run_dir / level / "stats.jsonl").read_text().splitlines()]
        assert stats and all(np.isfinite(r["loss_D"]) and np.isfinite(r["loss_G"]) for r in stats)
        mon = [json.loads(x) for x in (run_dir / level / "monitor.jsonl").read_text().splitlines()]
        assert mon and mon[-1]["acc_fake"] is not None  # the monitor scored labelled reals and fakes
    grid = Image.open(run_dir / "level_0" / "samples" / "fakes_latest.png")
    assert grid.height < grid.width  # one row of 8 per class: 2 rows
    gen = run(["generate", run_dir, "--seeds", "0-3", "--class", "1", "--grid", tmp_path / "g.png"])
    assert (tmp_path / "g.png").is_file(), gen
    # the conditional ticket cannot be trained unconditionally
    out = run(["train", "--outdir", tmp_path / "runs2", "--data", folder, "--ticket", run_dir / "level_0",
               "--kimg", "0.008", *tiny], expect=2)
    assert "class-count mismatch" in out and "2 classes" in out and "unconditional" in out
