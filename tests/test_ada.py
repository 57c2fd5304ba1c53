"""ADA (Karras et al. 2020) and LeCam (Tseng et al. 2021), issue #9: each transform on crafted images, identity at
p = 0, gradients, the adaptive-p controller, LeCam by hand, checkpoint round trips, spec errors, the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from degan.augment import AdaAugment, ADAController, AdaSettings, LeCam, LeCamObjective, build_augment
from degan.augment.ada import PIPELINES, STRENGTHS, TRANSFORMS, parse_ada_spec, plot_ada
from degan.augment.lecam import lecam_penalty
from degan.cli import main, split_lecam
from degan.config import ConfigError, RunConfig, config_hash, non_default, resolve
from degan.losses import GANObjective
from degan.train.state import make_state


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ada(pipeline: str, p: float = 1.0, **strengths) -> AdaAugment:
    return AdaAugment(AdaSettings(pipeline=pipeline, p=p, strengths=strengths))


def _images(n=8, c=3, h=16, w=16, seed=1):
    return torch.rand(n, c, h, w, generator=_gen(seed)) * 2 - 1


def _blob(n: int, size: int = 64, offset=(6.0, -4.0), sigma: float = 2.0) -> torch.Tensor:
    """A Gaussian blob at ``offset`` (x right, y down; pixels from the image centre), 1-channel, background 0."""
    c = (torch.arange(size) + 0.5 - size / 2).float()
    y, x = c.view(size, 1), c.view(1, size)
    img = torch.exp(-((x - offset[0]) ** 2 + (y - offset[1]) ** 2) / (2 * sigma ** 2))
    return img.expand(n, 1, size, size).clone()


def _centroid(img: torch.Tensor) -> torch.Tensor:
    """Intensity centroid [N, 2] (x, y) in pixel-centred coordinates of 1-channel images."""
    h, w = img.shape[2:]
    cy = (torch.arange(h) + 0.5 - h / 2).float().view(1, h, 1)
    cx = (torch.arange(w) + 0.5 - w / 2).float().view(1, 1, w)
    m = img[:, 0].clamp(min=0)
    total = m.sum((1, 2))
    return torch.stack([(m * cx).sum((1, 2)) / total, (m * cy).sum((1, 2)) / total], 1)


# --------------------------------------------------------------------------------------------------- identity, grads


@pytest.mark.parametrize("pipeline", ["bgc", "bg", "b", "c", "bgcfnc"])
def test_p0_is_the_identity(pipeline):
    x = _images()
    aug = _ada(pipeline, p=0.0)
    assert aug(x, generator=_gen()) is x
    adaptive = build_augment(f"ada:{pipeline}")  # adaptive mode starts at p = 0
    assert adaptive.p == 0.0 and torch.equal(adaptive(x, generator=_gen()), x)


@pytest.mark.parametrize("pipeline", ["bgcfnc", "xflip+rotate90+xint", "scale+rotate+aniso+xfrac", "c", "f"])
def test_gradients_flow_to_the_input(pipeline):
    x = _images(4, 3, 16, 16).requires_grad_(True)
    y = _ada(pipeline, p=1.0)(x, generator=_gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    (y * torch.randn(y.shape, generator=_gen(3))).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every sample gets gradient


def test_same_generator_state_same_draw_and_p_per_sample():
    x = _images(16)
    aug = _ada("bgc", p=0.7)
    assert torch.equal(aug(x, generator=_gen(5)), aug(x, generator=_gen(5)))
    n = 4000
    b = _ada("brightness", p=0.3)
    b(torch.zeros(n, 3, 2, 2), generator=_gen(1))
    frac = (b.last_params["brightness"] != 0).float().mean().item()
    assert abs(frac - 0.3) < 0.03
    r = _ada("rotate", p=0.3)  # two rotations with p_rot = 1 - sqrt(1 - p): some rotation with probability p
    r(torch.zeros(n, 1, 2, 2), generator=_gen(2))
    any_rot = (r.last_params["rotate"] != 0).any(1).float().mean().item()
    assert abs(any_rot - 0.3) < 0.03


# --------------------------------------------------------------------------------------------------- geometry


def test_xflip_flips():
    x = _images(64)
    aug = _ada("xflip")
    y = aug(x, generator=_gen())
    i = aug.last_params["xflip"]
    assert 10 < int(i.sum()) < 54  # i uniform in {0, 1} at p = 1
    for k in range(64):
        expected = x[k].flip(-1) if i[k] else x[k]
        assert torch.allclose(y[k], expected, atol=1e-5)


def test_rotate90_rotates():
    x = _images(64)
    aug = _ada("rotate90")
    y = aug(x, generator=_gen())
    k = aug.last_params["rotate90"].long()
    assert set(k.tolist()) == {0, 1, 2, 3}
    for j in range(64):
        matches = [q for q in range(4) if torch.allclose(y[j], torch.rot90(x[j], q, dims=(1, 2)), atol=1e-5)]
        assert matches, "output is not a 90-degree rotation of the input"
        assert matches[0] == (-int(k[j])) % 4  # k quarter turns clockwise on screen (y axis down)


def test_integer_translation_moves_a_dot_by_whole_pixels():
    n, size = 32, 32
    x = torch.zeros(n, 1, size, size)
    x[:, :, 16, 16] = 1.0
    aug = _ada("xint")
    y = aug(x, generator=_gen())
    shift = aug.last_params["xint"]  # pixels (x, y)
    limit = round(STRENGTHS["xint_max"] * size)
    assert shift.abs().max() <= limit and (shift != 0).any()
    assert torch.equal(shift, shift.round())
    for j in range(n):
        yy, xx = divmod(int(y[j, 0].argmax()), size)
        assert (xx - 16, yy - 16) == (int(shift[j, 0]), int(shift[j, 1]))
        assert y[j].sum().item() == pytest.approx(1.0, abs=1e-5)


def _forward_position(name: str, params: dict, pos: torch.Tensor) -> torch.Tensor:
    """Where the forward transform of ``name`` moves the point ``pos`` [N, 2]."""
    x, y = pos[:, 0], pos[:, 1]

    def rot(x, y, th):
        return torch.cos(th) * x - torch.sin(th) * y, torch.sin(th) * x + torch.cos(th) * y

    if name in ("xint", "xfrac"):
        return pos + params[name]
    if name == "scale":
        return pos * params["scale"][:, None]
    if name == "aniso":
        a = params["aniso"]
        return torch.stack([x * a, y / a], 1)
    if name == "rotate":
        th = params["rotate"]
        x, y = rot(x, y, th[:, 0])
        return torch.stack(rot(x, y, th[:, 1]), 1)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["xint", "xfrac", "scale", "aniso", "rotate"])
def test_geometric_transform_moves_a_blob_where_its_parameters_say(name):
    n = 12
    offset = torch.tensor([6.0, -4.0])
    x = _blob(n, offset=tuple(offset.tolist()))
    aug = _ada(name)
    y = aug(x, generator=_gen(4))
    expected = _forward_position(name, aug.last_params, offset.expand(n, 2))
    moved = (expected - offset).norm(dim=1)
    assert (moved > 0.05).sum() >= n // 2  # the transform does something at p = 1
    assert torch.allclose(_centroid(y), expected, atol=0.25)


def test_scale_and_aniso_strengths_are_the_papers():
    n = 4000
    for name, std in (("scale", 0.2), ("aniso", 0.2)):
        aug = _ada(name)
        aug(torch.zeros(n, 1, 2, 2), generator=_gen(7))
        assert torch.log2(aug.last_params[name]).std().item() == pytest.approx(std, rel=0.08)
    r = _ada("rotate")
    r(torch.zeros(n, 1, 2, 2), generator=_gen(8))
    th = r.last_params["rotate"]
    assert th.min() < -0.95 * math.pi and th.max() > 0.95 * math.pi  # up to a full turn


# --------------------------------------------------------------------------------------------------- colour and the rest


def test_brightness_shifts_the_mean():
    x = _images(32)
    aug = _ada("brightness")
    y = aug(x, generator=_gen())
    b = aug.last_params["brightness"]
    assert torch.allclose((y - x).flatten(1), b[:, None].expand(32, 3 * 16 * 16), atol=1e-5)
    assert torch.allclose(y.mean((1, 2, 3)) - x.mean((1, 2, 3)), b, atol=1e-5)
    assert b.std().item() == pytest.approx(0.2, rel=0.35)


def test_contrast_scales_around_zero():
    x = _images(32)
    aug = _ada("contrast")
    y = aug(x, generator=_gen())
    c = aug.last_params["contrast"]
    assert torch.allclose(y, x * c.view(-1, 1, 1, 1), atol=1e-5)


def test_lumaflip_hue_saturation_on_crafted_colours():
    grey = torch.full((16, 3, 4, 4), 0.3)
    aug = _ada("lumaflip")
    y = aug(grey, generator=_gen())
    flip = aug.last_params["lumaflip"].bool()
    assert torch.allclose(y[flip], -grey[flip], atol=1e-5) and torch.allclose(y[~flip], grey[~flip], atol=1e-5)
    # hue rotation: grey stays grey, colours keep their channel mean and their distance from grey
    assert torch.allclose(_ada("hue")(grey, generator=_gen()), grey, atol=1e-5)
    x = _images(16)
    hue = _ada("hue")
    y = hue(x, generator=_gen(2))
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-5)
    assert torch.allclose((y - y.mean(1, keepdim=True)).norm(dim=1), (x - x.mean(1, keepdim=True)).norm(dim=1),
                          atol=1e-4)
    red = torch.zeros(1, 3, 1, 1)
    red[0, 0] = 1.0
    half = AdaAugment(AdaSettings(pipeline="hue", p=1.0))
    out = half(red.expand(64, 3, 1, 1), generator=_gen(3))
    th = half.last_params["hue"]
    j = int((th - 2 * math.pi / 3).abs().argmin())  # a rotation by ~120 degrees sends red to green
    assert abs(float(th[j]) - 2 * math.pi / 3) < 0.15
    assert torch.allclose(out[j, :, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=0.1)
    sat = _ada("saturation")
    y = sat(x, generator=_gen(4))
    s = sat.last_params["saturation"].view(-1, 1, 1)
    m = x.mean(1, keepdim=True)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-5)
    assert torch.allclose(y - y.mean(1, keepdim=True), (x - m) * s.unsqueeze(1), atol=1e-4)


def test_colour_on_grey_images_and_bad_channels():
    x = _images(8, 1)
    aug = _ada("brightness")
    y = aug(x, generator=_gen())
    assert torch.allclose(y - x, aug.last_params["brightness"].view(-1, 1, 1, 1).expand_as(x), atol=1e-5)
    assert torch.allclose(_ada("saturation+hue")(x, generator=_gen()), x, atol=1e-5)  # no colour to change
    with pytest.raises(ValueError, match="1 or 3 channels"):
        _ada("c")(_images(2, 5), generator=_gen())
    rgba = _images(2, 4)  # alpha last (keep-alpha): colour transforms leave it alone
    assert torch.equal(_ada("c")(rgba, generator=_gen())[:, 3], rgba[:, 3])
    assert _ada("bg")(_images(2, 4), generator=_gen()).shape == (2, 4, 16, 16)  # geometry works for any C


def test_filter_noise_cutout():
    const = torch.full((8, 3, 16, 16), 0.5)
    f = _ada("imgfilter")
    y = f(const, generator=_gen())
    g = f.last_params["imgfilter"]
    assert torch.allclose(y, const * g[:, :1].view(-1, 1, 1, 1), atol=1e-4)  # DC is amplified by band 0's gain
    x = torch.zeros(8, 3, 64, 64)
    nz = _ada("noise")
    y = nz(x, generator=_gen())
    assert torch.allclose(y.flatten(1).std(1), nz.last_params["noise"], rtol=0.1, atol=1e-3)
    co = _ada("cutout")
    x = torch.ones(8, 1, 16, 16)
    y = co(x, generator=_gen())
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    erased = (y == 0).flatten(1).sum(1)
    assert (erased > 0).all() and (erased <= 8 * 8).all()


# --------------------------------------------------------------------------------------------------- specs and errors


def test_specs_parse_and_round_trip():
    assert build_augment("ada").spec == "ada:bgc" and build_augment("ada").adaptive
    fixed = build_augment("ada:bg:p=0.3")
    assert fixed.p == 0.3 and not fixed.adaptive and fixed.transforms == PIPELINES["bg"]
    assert parse_ada_spec("p=0.5").pipeline == "bgc"
    s = parse_ada_spec("xflip+rotate90:target=0.7,interval=8,kimg=100,scale_std=0.1")
    assert (s.target, s.interval, s.kimg, s.strengths) == (0.7, 8, 100.0, {"scale_std": 0.1})
    for spec in ("ada:bgc", "ada:bg:p=0.3", "ada:xflip+rotate90:target=0.7,interval=8,kimg=100", "ada:c:p=1,hue_max=0.5"):
        assert build_augment(build_augment(spec).spec).spec == build_augment(spec).spec
    assert set(PIPELINES["bgc"]) == set(TRANSFORMS[:12])


@pytest.mark.parametrize("spec,msg", [
    ("ada:bgx", "unknown ADA pipeline 'bgx'"),
    ("ada:xflip+wobble", "unknown ADA transform 'wobble'"),
    ("ada:bgc:p=1.5", r"p=1.5 is not a probability"),
    ("ada:bgc:p=-0.1", "not a probability"),
    ("ada:bgc:target=1", r"target=1 must be in \(0, 1\)"),
    ("ada:bgc:target=0", r"must be in \(0, 1\)"),
    ("ada:bgc:p=0.3,target=0.6", "give one or the other"),
    ("ada:bgc:interval=0", "interval"),
    ("ada:bgc:kimg=0", "kimg"),
    ("ada:bgc:bogus=1", "unknown ADA option 'bogus'"),
    ("ada:bgc:scale_std=-1", "must be a finite number >= 0"),
    ("diffaug+ada", "same D pass"),
    ("ada+diffaug:translation", "same D pass"),
    ("ada+lecam", "LeCam is a D regulariser"),
])
def test_bad_specs_are_clear_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        build_augment(spec)


def test_bad_spec_in_config_is_a_config_error():
    with pytest.raises(ConfigError, match="train.augment"):
        resolve(None, None, ["train.augment=ada:bgc:p=2"])
    with pytest.raises(ConfigError, match="lecam.decay"):
        resolve(None, None, ["lecam.decay=1.0"])
    assert not any(k.startswith("lecam.") for k in non_default(RunConfig()))  # existing config hashes unchanged
    assert config_hash(resolve(None, None, ["lecam.enabled=true"])) != config_hash(RunConfig())


def test_explicit_diffaugment_combination_warns_and_runs_both():
    with pytest.warns(UserWarning, match="same D pass"):
        aug = build_augment("ada:bgc:p=0.5,diffaug=translation+cutout")
    x = _images(4)
    y = aug(x, generator=_gen())
    assert y.shape == x.shape and aug.spec == "ada:bgc:p=0.5,diffaug=translation+cutout"
    assert (y == 0).flatten(1).any(1).all()  # cutout (zeros) from DiffAugment after ADA


def test_cli_lecam_suffix():
    assert split_lecam("ada+lecam") == ("ada", True)
    assert split_lecam("ada:bgc:p=0.3+lecam") == ("ada:bgc:p=0.3", True)
    assert split_lecam("lecam") == ("none", True)
    assert split_lecam("diffaug:color,translation") == ("diffaug:color,translation", False)


# --------------------------------------------------------------------------------------------------- adaptive p


def test_controller_step_size_and_direction():
    aug = build_augment("ada:bgc")  # target 0.6, interval 4, kimg 500
    ctl = ADAController(aug)
    step = 8 * 4 / (500 * 1000)
    for _ in range(3):
        ctl.observe(1.0, 8)
    assert ctl.p == 0.0  # no update inside an interval
    ctl.observe(1.0, 8)
    assert ctl.p == pytest.approx(step) and ctl.last_rt == 1.0
    for _ in range(4 * 5):  # overfitting: r_t = 0.75 > 0.6
        ctl.observe(0.75, 8)
    assert ctl.p == pytest.approx(6 * step)
    for _ in range(4 * 2):  # mean over the interval decides: (0.5 + 0.5 + 0.5 + 0.5) / 4 < 0.6
        ctl.observe(0.5, 8)
    assert ctl.p == pytest.approx(4 * step)
    for _ in range(4 * 10):  # underfitting drives p down to 0 and no further
        ctl.observe(-1.0, 8)
    assert ctl.p == 0.0
    # mixed sign sequence within one interval, weighted by batch size: (8*1 + 24*0.5) / 32 = 0.625 > 0.6
    ctl.observe(1.0, 8)
    for _ in range(3):
        ctl.observe(0.5, 8)
    assert ctl.p == pytest.approx(step)


def test_controller_clamps_at_one_and_fixed_mode_never_moves():
    ctl = ADAController(build_augment("ada:bgc:interval=1,kimg=0.01"))  # each step moves p by 8 / 10
    for _ in range(3):
        ctl.observe(1.0, 8)
    assert ctl.p == 1.0
    fixed = ADAController(build_augment("ada:bgc:p=0.25"))
    for _ in range(40):
        fixed.observe(1.0, 64)
    assert fixed.p == 0.25 and fixed.last_rt == 1.0


class _ConstD(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value))

    def forward(self, x):
        return x.mean((1, 2, 3)) * 0 + self.value


def test_wrapper_feeds_every_d_step_and_callback_logs():
    aug = build_augment("ada:bgc:interval=2,kimg=1")
    ctl = ADAController(aug)
    obj = ctl.wrap(GANObjective("hinge", aug))
    G = nn.Sequential(nn.Linear(4, 3 * 8 * 8), nn.Unflatten(1, (3, 8, 8)))
    real, z = _images(8, 3, 8, 8), torch.randn(8, 4)
    for _ in range(2):
        _, stats = obj.d_loss(G, _ConstD(1.0), real, z, _gen())
    assert stats["r_t"] == 1.0 and ctl.p == pytest.approx(16 / 1000)
    assert obj.loss.name == "hinge"  # attributes delegate

    class T:
        class state:
            cur_nimg = 16

    stats = {}
    ctl.on_train_start(T)
    ctl.on_step_end(T, stats)
    assert stats["ada_p"] == ctl.p and stats["ada_rt"] == 1.0


# --------------------------------------------------------------------------------------------------- LeCam


class _FixedLogits:
    """An objective whose D pass has given logits (with gradient) and loss 0."""

    def __init__(self) -> None:
        self.last_d_pass = None
        self.queue: list = []

    def d_loss(self, G, D, real, z, generator=None):
        r, f = self.queue.pop(0)
        self.last_d_pass = {"real": None, "fake": None, "real_logits": r, "fake_logits": f}
        return r.sum() * 0, {"loss_D": 0.0}

    def g_loss(self, G, D, z, generator=None):
        return torch.zeros(()), {"loss_G": 0.0}


def test_lecam_equals_a_hand_computation():
    lc = LeCam(weight=0.5, decay=0.5, start_step=1)
    inner = _FixedLogits()
    obj = lc.wrap(inner)  # counts D steps: step 0 = no penalty, step 1 on
    r1, f1 = torch.tensor([2.0, 2.0]), torch.tensor([-2.0, -2.0])
    r2 = torch.tensor([1.0, 3.0, -1.0], requires_grad=True)
    f2 = torch.tensor([0.0, -2.0, 2.0], requires_grad=True)
    inner.queue = [(r1, f1), (r2, f2)]
    loss, stats = obj.d_loss(None, None, None, None)
    assert (lc.alpha_R, lc.alpha_F) == (2.0, -2.0)  # bias-corrected EMA = the first means
    assert stats["lecam_on"] == 0.0 and float(loss) == 0.0
    loss, stats = obj.d_loss(None, None, None, None)
    # EMAs: biased 0.5*1 + 0.5*1 = 1 and 0.5*(-1) + 0.5*0 = -0.5, corrected by 1 - 0.5^2 = 0.75
    assert lc.alpha_R == pytest.approx(4 / 3) and lc.alpha_F == pytest.approx(-2 / 3)
    # relu(r + 2/3)^2 = 25/9, 121/9, 0; relu(4/3 - f)^2 = 16/9, 100/9, 0  -> R = 146/27 + 116/27
    assert stats["loss_LeCam"] == pytest.approx(262 / 27, rel=1e-6) and stats["lecam_on"] == 1.0
    assert float(loss.detach()) == pytest.approx(0.5 * 262 / 27, rel=1e-6)
    loss.backward()
    assert torch.allclose(r2.grad, 0.5 * 2 * torch.tensor([5 / 3, 11 / 3, 0.0]) / 3, atol=1e-6)
    assert torch.allclose(f2.grad, -0.5 * 2 * torch.tensor([4 / 3, 10 / 3, 0.0]) / 3, atol=1e-6)
    assert float(lecam_penalty(torch.zeros(3), torch.zeros(3), 0.0, 0.0)) == 0.0


def test_lecam_start_step_from_step_fn_and_bad_settings():
    step = {"n": 0}
    lc = LeCam(weight=0.3, start_step=2)
    inner = _FixedLogits()
    obj = LeCamObjective(inner, lc, step_fn=lambda: step["n"])
    for n in range(4):
        step["n"] = n
        inner.queue = [(torch.tensor([1.0]), torch.tensor([-1.0]))]
        _, stats = obj.d_loss(None, None, None, None)
        assert stats["lecam_on"] == float(n >= 2)
    for kw in ({"weight": -1}, {"decay": 1.0}, {"start_step": -1}):
        with pytest.raises(ValueError):
            LeCam(**kw)


# --------------------------------------------------------------------------------------------------- checkpoints


def test_ada_and_lecam_state_survive_a_checkpoint_round_trip(tmp_path):
    def state_with_extras():
        st = make_state(nn.Linear(2, 2), nn.Linear(2, 1), lr_G=1e-3, lr_D=1e-3, betas=(0.0, 0.9))
        ctl = ADAController(build_augment("ada:bgc:interval=3,kimg=0.1"))
        lc = LeCam(decay=0.9)
        st.extras.update(ada=ctl, lecam=lc)
        return st, ctl, lc

    st, ctl, lc = state_with_extras()
    for v in (1.0, 1.0, 1.0, 0.9, 0.8):  # one update, then two steps into the next interval
        ctl.observe(v, 8)
    lc.update(torch.tensor([1.5, 0.5]), torch.tensor([-0.5]))
    lc.update(torch.tensor([2.0]), torch.tensor([-1.0]))
    torch.save(st.state_dict(), tmp_path / "ckpt.pt")

    st2, ctl2, lc2 = state_with_extras()
    st2.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert ctl2.p == ctl.p == ctl2.augment.p and ctl2.state_dict() == ctl.state_dict()
    assert (lc2.alpha_R, lc2.alpha_F, lc2.updates) == (lc.alpha_R, lc.alpha_F, 2)
    for c in (ctl, ctl2):  # the interval resumes where it stopped
        c.observe(1.0, 8)
    assert ctl2.p == ctl.p and ctl2.updates == 2


def test_plot_ada(tmp_path):
    path = tmp_path / "stats.jsonl"
    path.write_text("\n".join(json.dumps({"kimg": k / 10, "ada_p": k / 100, "ada_rt": 0.5}) for k in range(5)) + "\n")
    png, csv = plot_ada(path, tmp_path / "ada_p.png", target=0.6)
    assert png.stat().st_size > 0 and csv.read_text().startswith("kimg,p,r_t")
    assert plot_ada(tmp_path / "missing.jsonl", tmp_path / "x.png") is None


# --------------------------------------------------------------------------------------------------- CLI


TINY = ["--data", "faces100", "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8",
        "--metrics", "none", "--no-progress"]


def _run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


@pytest.fixture(scope="module")
def ada_run(tmp_path_factory):
    """A tiny dense run with adaptive ADA (p moves 0.08 per D step) and LeCam from G step 2."""
    out = tmp_path_factory.mktemp("ada") / "runs"
    _run(["train", "--outdir", out, *TINY, "--kimg", "0.064", "--augment", "ada:interval=1,kimg=0.1+lecam",
          "--set", "lecam.start_step=2"])
    (run,) = list(out.iterdir())
    return run


def test_cli_train_ada_lecam(ada_run):
    done = json.loads((ada_run / "level_0" / "done.json").read_text())
    assert done["ada"]["adaptive"] and 0 < done["ada"]["p_final"] <= 1 and done["ada"]["p_updates"] == 8
    assert done["lecam"]["alpha_R"] is not None
    assert (ada_run / "level_0" / "ada_p.png").is_file()
    stats = [json.loads(line) for line in (ada_run / "level_0" / "stats.jsonl").read_text().splitlines()]
    assert "ada_p" in stats[-1] and "loss_LeCam" in stats[-1]
    ckpt = max((ada_run / "level_0" / "checkpoints").iterdir())
    extras = torch.load(ckpt, weights_only=True)["state"]["extras"]
    assert extras["ada"]["p"] == done["ada"]["p_final"] and extras["lecam"]["updates"] == 8


def test_cli_ticket_with_fixed_ada_and_leak_check(ada_run, tmp_path):
    # a ticket (here: the dense level's mask) trained with fixed-p ADA
    _run(["train", "--outdir", tmp_path, *TINY, "--kimg", "0.016", "--augment", "ada:bg:p=0.4",
          "--ticket", ada_run / "level_0"])
    (trun,) = list(tmp_path.iterdir())
    assert json.loads((trun / "level_0" / "done.json").read_text())["ada"]["p_final"] == 0.4
    # the leak check of `degan eval` (no Inception needed with --metrics none)
    out = _run(["eval", trun, "--metrics", "none", "--num-gen", "64", "--leak-check", "always", "--no-progress"])
    leak = json.loads((trun / "level_0" / "leak.json").read_text())
    assert "leak check" in out and leak["ada_p_final"] == 0.4 and leak["num_fakes"] == 64


def test_cli_bad_input_and_preview(tmp_path):
    out = _run(["train", "--dry-run", "--outdir", tmp_path, *TINY, "--augment", "diffaug+ada"], expect=2)
    assert "error:" in out and "same D pass" in out
    out = _run(["train", "--dry-run", "--outdir", tmp_path, *TINY, "--augment", "ada:bgc:p=1.2"], expect=2)
    assert "not a probability" in out
    out = _run(["train", "--dry-run", "--outdir", tmp_path, *TINY, "--augment", "ada+lecam"])
    assert "enabled: true" in out and "augment: ada" in out
    png = tmp_path / "prev.png"
    out = _run(["preview-augment", "--data", "faces100", "--augment", "ada:bgc", "--p", "0.8", "--resolution", "16",
                "--n", "4", "--rows", "2", "--out", png])
    assert png.is_file() and "ada:bgc:p=0.8" in out
    _run(["preview-augment", "--data", "faces100", "--augment", "diffaug", "--resolution", "16", "--out", png])
    out = _run(["preview-augment", "--data", "faces100", "--augment", "diffaug", "--p", "0.5", "--out", png], expect=2)
    assert "--p sets ADA's probability" in out


def test_leak_statistics_flag_rotated_and_recoloured_fakes():
    from degan.augment.ada import leak_statistics

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 255, 16).view(1, 1, 16, 1).expand(64, 3, 16, 16)  # bright at the bottom
    reals = (ramp * 0.8 + torch.rand(64, 3, 16, 16, generator=g) * 40).to(torch.uint8)
    same = leak_statistics(reals, reals.flip(3))  # mirrored reals: no leak
    assert same["suspect"] == [] and same["reals"]["rotated"] < 0.1
    rotated = torch.cat([torch.rot90(reals[:32], 1, dims=(2, 3)), torch.rot90(reals[32:], 2, dims=(2, 3))])
    res = leak_statistics(reals, rotated)
    assert res["fakes"]["rotated"] > 0.9 and "rotated" in res["suspect"]
    with pytest.raises(ValueError, match="uint8"):
        leak_statistics(reals.float(), reals)
