"""DiffAugment (SPEC.md section 2): shapes, per-op math, zero fill, per-sample randomness, seeds, gradients."""

from __future__ import annotations

import pytest
import torch

from degan.augment import AUGMENTS, DiffAugment, DiffAugmentModule, build_augment
from degan.augment.diffaug import cutout_size, translation_shift

H = W = 16


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 8, c: int = 3, h: int = H, w: int = W, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=_gen(seed)) * 2 - 1


@pytest.mark.parametrize(
    "policy", ["color", "translation", "cutout", "color,translation,cutout", "brightness", "saturation", "contrast"]
)
def test_shape_dtype_kept(policy):
    x = _images(4, 3, 12, 20)
    y = DiffAugment(x, policy, generator=_gen())
    assert y.shape == x.shape and y.dtype == x.dtype


def test_brightness_shift_in_range_and_constant_per_sample():
    x = _images(64)
    d = DiffAugment(x, "brightness", generator=_gen()) - x
    per_sample = d.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample), atol=1e-6)
    assert per_sample.min() >= -0.5 and per_sample.max() < 0.5


def _fit_scale(x, y, m):
    """Per-sample least-squares k in ``y - m = k (x - m)``; asserts the fit is exact."""
    a, b = (x - m).flatten(1), (y - m).flatten(1)
    k = (a * b).sum(1) / (a * a).sum(1)
    assert torch.allclose(b, a * k[:, None], atol=1e-5)
    return k


def test_saturation_scales_around_channel_mean():
    x = _images(64)
    m = x.mean(dim=1, keepdim=True)
    y = DiffAugment(x, "saturation", generator=_gen())
    k = _fit_scale(x, y, m)  # 2u per sample
    assert k.min() >= -1e-4 and k.max() < 2.0 + 1e-4
    assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)  # channel mean kept


def test_contrast_scales_around_image_mean():
    x = _images(64)
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    y = DiffAugment(x, "contrast", generator=_gen())
    k = _fit_scale(x, y, m)  # u + 0.5 per sample
    assert k.min() >= 0.5 - 1e-4 and k.max() < 1.5 + 1e-4


def test_color_equals_three_ops_in_order():
    x = _images()
    expected = DiffAugment(x, "brightness,saturation,contrast", generator=_gen(3))
    assert torch.equal(DiffAugment(x, "color", generator=_gen(3)), expected)


def _unique_images(n: int, h: int = H, w: int = W) -> torch.Tensor:
    """Positive, all-distinct values so each output pixel names its source pixel."""
    return (torch.arange(n * h * w, dtype=torch.float32) + 1).view(n, 1, h, w)


def test_translation_is_a_zero_filled_shift_bounded_by_s():
    n = 32
    x = _unique_images(n)
    y = DiffAugment(x, "translation", generator=_gen(5))
    s = translation_shift(H)
    assert s == 2
    shifts = set()
    for k in range(n):
        src, out = x[k, 0], y[k, 0]
        vals = set(out[out != 0].tolist())
        assert vals <= set(src.flatten().tolist())  # values from the input or 0
        # Recover the shift from the first non-zero pixel and check the whole image against it.
        i, j = map(int, (out != 0).nonzero()[0])
        si, sj = map(int, (src == out[i, j]).nonzero()[0])
        tx, ty = i - si, j - sj
        assert abs(tx) <= s and abs(ty) <= s
        expected = torch.zeros_like(src)
        rows = slice(max(tx, 0), H + min(tx, 0))
        cols = slice(max(ty, 0), W + min(ty, 0))
        src_rows = slice(max(-tx, 0), H + min(-tx, 0))
        src_cols = slice(max(-ty, 0), W + min(-ty, 0))
        expected[rows, cols] = src[src_rows, src_cols]
        assert torch.equal(out, expected), (k, tx, ty)
        shifts.add((tx, ty))
    assert len(shifts) > 5  # per-sample shifts differ


def test_translation_matches_documented_draws():
    n = 16
    x = torch.ones(n, 3, H, W)
    y = DiffAugment(x, "translation", generator=_gen(11))
    g = _gen(11)
    s = translation_shift(H)
    tx = torch.randint(-s, s + 1, (n,), generator=g)
    ty = torch.randint(-s, s + 1, (n,), generator=g)
    for k in range(n):
        expected = torch.zeros(H, W)
        a, b = int(tx[k]), int(ty[k])
        expected[max(a, 0) : H + min(a, 0), max(b, 0) : W + min(b, 0)] = 1
        for ch in range(3):  # zero band exactly at the shifted-in border, never wrapped values
            assert torch.equal(y[k, ch], expected), (k, a, b)


def test_translation_zero_bands_are_contiguous_borders():
    y = DiffAugment(torch.ones(64, 1, H, W), "translation", generator=_gen(2))
    for img in y[:, 0]:
        zero_rows = (img == 0).all(dim=1).nonzero().flatten().tolist()
        zero_cols = (img == 0).all(dim=0).nonzero().flatten().tolist()
        for idx in (zero_rows, zero_cols):
            top = [i for i in idx if i < H // 2]
            bottom = [i for i in idx if i >= H // 2]
            assert top == list(range(len(top)))
            assert bottom == list(range(H - len(bottom), H))
            assert not (top and bottom)
        # every zero pixel lies in a zero row or column
        zero = img == 0
        covered = zero.all(dim=1, keepdim=True) | zero.all(dim=0, keepdim=True)
        assert torch.equal(zero, zero & covered)


def test_cutout_square_size_and_values():
    n = 256
    x = torch.ones(n, 3, H, W)
    y = DiffAugment(x, "cutout", generator=_gen(4))
    side = cutout_size(H)
    assert side == 8
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])  # same square on all channels
    zeros = (y[:, 0] == 0).flatten(1).sum(dim=1)
    assert zeros.max() == side * side  # fully inside: exactly side^2
    assert zeros.min() >= (side // 2) ** 2  # clipped at a corner: at least a quarter (centre inside the image)
    assert (zeros == side * side).sum() > n // 4
    for img in y[:, 0]:  # the erased set is an axis-aligned rectangle
        z = img == 0
        rows, cols = z.any(dim=1), z.any(dim=0)
        assert torch.equal(z, rows[:, None] & cols[None, :])
        assert rows.sum() <= side and cols.sum() <= side


def test_cutout_odd_size():
    y = DiffAugment(torch.ones(64, 1, 15, 15), "cutout", generator=_gen(0))
    side = cutout_size(15)
    assert side == 8
    assert (y[:, 0] == 0).flatten(1).sum(dim=1).max() <= side * side


def test_per_sample_randomness():
    x = _images(1).expand(16, -1, -1, -1).contiguous()
    for policy in ["brightness", "saturation", "contrast", "translation", "cutout"]:
        y = DiffAugment(x, policy, generator=_gen(7)).flatten(1)
        distinct = {tuple(row.tolist()) for row in y}
        assert len(distinct) > 4, policy


def test_reproducible_from_seed():
    x = _images()
    policy = "color,translation,cutout"
    a = DiffAugment(x, policy, generator=_gen(123))
    b = DiffAugment(x, policy, generator=_gen(123))
    c = DiffAugment(x, policy, generator=_gen(124))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_rng_when_no_generator():
    x = _images()
    torch.manual_seed(0)
    a = DiffAugment(x)
    torch.manual_seed(0)
    assert torch.equal(a, DiffAugment(x))


def test_gradient_flows():
    x = _images().requires_grad_(True)
    y = DiffAugment(x, "color,translation,cutout", generator=_gen())
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_empty_policy_is_identity():
    x = _images()
    assert DiffAugment(x, "") is x
    assert DiffAugment(x, " , ") is x
    assert DiffAugmentModule("")(x) is x


def test_unknown_op_lists_valid_ops():
    with pytest.raises(ValueError, match="valid names are: .*brightness.*color.*cutout.*translation"):
        DiffAugment(_images(), "color,flip")
    with pytest.raises(ValueError):
        DiffAugmentModule("rotate")


def test_bad_input_raises():
    with pytest.raises(ValueError):
        DiffAugment(torch.zeros(3, 8, 8), "color")
    with pytest.raises(ValueError):
        DiffAugment(torch.zeros(2, 3, 8, 8, dtype=torch.long), "color")


def test_module_matches_function():
    x = _images()
    m = DiffAugmentModule(" translation , cutout ")
    assert m.policy == "translation,cutout"
    assert torch.equal(m(x, generator=_gen(9)), DiffAugment(x, "translation,cutout", generator=_gen(9)))


def test_build_augment_parsing():
    assert build_augment(None) is None
    assert build_augment("none") is None
    assert build_augment("None") is None
    assert build_augment("") is None
    aug = build_augment("diffaug")
    assert aug.spec == "diffaug:color,translation,cutout"
    aug = build_augment("diffaug:translation,cutout")
    assert aug.spec == "diffaug:translation,cutout"
    x = _images()
    assert torch.equal(aug(x, generator=_gen(1)), DiffAugment(x, "translation,cutout", generator=_gen(1)))
    assert build_augment(aug.spec).spec == aug.spec  # canonical spec round-trips
    assert "diffaug" in AUGMENTS.names()
    with pytest.raises(ValueError, match="valid names are"):
        build_augment("mixup")
    with pytest.raises(ValueError, match="valid names are"):
        build_augment("diffaug:color,blur")
