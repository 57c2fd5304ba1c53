"""Tests of degan.data: every format on files written here, the real shared data, resizing, subsets, errors."""

from __future__ import annotations

import gzip
import importlib.util
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from degan.data import ImageSet, dataset_id, load_dataset, parse_subset, select_subset
from degan.errors import DataError



# --------------------------------------------------------------------------- helpers


def _img(mode: str, size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    c = {"L": 1, "RGB": 3, "RGBA": 4, "LA": 2}[mode]
    a = rng.integers(0, 256, size=(size[1], size[0], c), dtype=np.uint8)
    return Image.fromarray(a[..., 0] if c == 1 else a, mode)


def _save(path: Path, img: Image.Image, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    root = tmp_path / "imgs"
    _save(root / "cats" / "a.png", _img("L", (20, 20), 1))
    _save(root / "cats" / "deep" / "b.JPG", _img("RGB", (40, 30), 2), "JPEG")
    _save(root / "cats" / "c.bmp", _img("RGB", (16, 16), 3))
    _save(root / "dogs" / "d.webp", _img("RGB", (24, 24), 4), "WEBP")
    _save(root / "dogs" / "e.png", _img("RGBA", (32, 32), 5))
    (root / "dogs" / "notes.txt").write_text("not an image")
    (root / "dogs" / ".hidden.png").write_bytes(b"junk")
    return root


def _cifar10_dir(root: Path, n_per_batch: int = 4) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"class{i}".encode() for i in range(10)]
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": n_per_batch}, f, protocol=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n_per_batch)]
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}, f, protocol=2)
    return d


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


# --------------------------------------------------------------------------- image folder / zip


def test_folder_with_class_subfolders(class_folder: Path):
    ds = load_dataset(str(class_folder), resolution=16)
    assert isinstance(ds, ImageSet)
    assert ds.images.shape == (5, 3, 16, 16) and ds.images.dtype == np.uint8
    assert ds.class_names == ["cats", "dogs"]
    # sorted posix order: cats/a.png, cats/c.bmp, cats/deep/b.JPG, dogs/d.webp, dogs/e.png
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and ds.labels.dtype == np.int64
    info = ds.info
    assert info["format"] == "image_folder" and info["num_found"] == 5 and info["num_usable"] == 5
    assert info["skipped"] == []
    assert info["original_modes"] == {"L": 1, "RGB": 3, "RGBA": 1}
    assert info["num_resampled"] == 4  # the 16x16 bmp is untouched
    # grayscale replicated, bmp untouched (exactly the stored pixels)
    assert np.array_equal(ds.images[0, 0], ds.images[0, 2])
    bmp = np.asarray(Image.open(class_folder / "cats" / "c.bmp")).transpose(2, 0, 1)
    assert np.array_equal(ds.images[1], bmp)
    import json
    json.dumps(info)  # serialisable


def test_folder_flat_and_single_wrapper_have_no_labels(tmp_path: Path):
    for i in range(3):
        _save(tmp_path / "flat" / f"{i}.png", _img("RGB", (8, 8), i))
        _save(tmp_path / "wrap" / "obama" / f"{i}.png", _img("RGB", (8, 8), i))
    _save(tmp_path / "mixed" / "a.png", _img("RGB", (8, 8)))
    _save(tmp_path / "mixed" / "sub" / "b.png", _img("RGB", (8, 8)))
    for name in ("flat", "wrap", "mixed"):
        ds = load_dataset(str(tmp_path / name), resolution=8)
        assert ds.labels is None and ds.class_names is None, name
    assert len(load_dataset(str(tmp_path / "mixed"), resolution=8)) == 2


def test_rgba_is_composited_on_black_and_luma(tmp_path: Path):
    a = np.zeros((8, 8, 4), np.uint8)
    a[..., 0] = 255  # pure red everywhere
    a[:4, :, 3] = 0  # top half fully transparent
    a[4:, :, 3] = 255
    _save(tmp_path / "x" / "a.png", Image.fromarray(a, "RGBA"))
    _save(tmp_path / "x" / "b.png", Image.fromarray(a, "RGBA"))
    ds = load_dataset(str(tmp_path / "x"), resolution=8)
    assert ds.images[0, :, :4].max() == 0
    assert ds.images[0, 0, 4:].min() == 255 and ds.images[0, 1:, 4:].max() == 0
    gray = load_dataset(str(tmp_path / "x"), resolution=8, channels=1)
    assert gray.images.shape == (2, 1, 8, 8)
    assert int(gray.images[0, 0, 7, 0]) == np.asarray(Image.new("RGB", (1, 1), (255, 0, 0)).convert("L"))[0, 0] == 76
    assert "composited on black" in ds.info["alpha"] and "601" in gray.info["channel_policy"]


def test_16bit_and_palette_images(tmp_path: Path):
    a16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(a16).save(tmp_path / "a.png")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).convert("P").save(tmp_path / "b.png")
    ds = load_dataset(str(tmp_path), resolution=8)
    assert ds.images[0, 0, 0, 1] == round(1000 * 255 / 65535)
    assert ds.images[0, 0, 7, 7] == round(63000 * 255 / 65535)
    assert ds.images[1].min() > 150


def test_zip_same_rules_as_folder(class_folder: Path, tmp_path: Path):
    zpath = tmp_path / "data.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted(class_folder.rglob("*")):
            if p.is_file():
                zf.write(p, "imgs/" + p.relative_to(class_folder).as_posix())  # wrapped in one top folder
        zf.writestr("__MACOSX/imgs/cats/._a.png", b"resource fork")
    z = load_dataset(str(zpath), resolution=16)
    f = load_dataset(str(class_folder), resolution=16)
    assert z.info["format"] == "zip"
    assert np.array_equal(z.images, f.images)
    assert z.labels.tolist() == f.labels.tolist() and z.class_names == ["cats", "dogs"]


def test_zero_byte_and_truncated_files_are_skipped_and_listed(tmp_path: Path):
    for i in range(3):
        _save(tmp_path / "d" / f"ok{i}.png", _img("RGB", (8, 8), i))
    (tmp_path / "d" / "empty.png").write_bytes(b"")
    good = _png_bytes(_img("RGB", (64, 64), 9))
    (tmp_path / "d" / "trunc.png").write_bytes(good[: len(good) // 2])
    with pytest.warns(UserWarning, match="skipped 2 of 5"):
        ds = load_dataset(str(tmp_path / "d"), resolution=8)
    assert len(ds) == 3 and ds.info["num_found"] == 5 and ds.info["num_usable"] == 3
    reasons = {s["path"]: s["reason"] for s in ds.info["skipped"]}
    assert set(reasons) == {"empty.png", "trunc.png"}
    assert "0 bytes" in reasons["empty.png"] and "trunc" in reasons["trunc.png"].lower()


def test_too_few_usable_images_lists_bad_files(tmp_path: Path):
    _save(tmp_path / "ok.png", _img("RGB", (8, 8)))
    for i in range(12):
        (tmp_path / f"bad{i:02d}.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"only 1 usable.*bad00\.png: UnidentifiedImageError: not a recognised.*and 2 more"
                                        r".*replace or remove the unreadable files") as e:
        load_dataset(str(tmp_path), resolution=8, min_images=2)
    assert "\n" not in str(e.value)  # the CLI shows it as one error line


def test_dataset_json_labels(tmp_path: Path):
    import json
    for i in range(4):
        _save(tmp_path / f"{i}.png", _img("RGB", (8, 8), i))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": [[f"{i}.png", i % 2] for i in range(4)]}))
    ds = load_dataset(str(tmp_path), resolution=8)
    assert ds.labels.tolist() == [0, 1, 0, 1] and ds.info["notes"]["labels_from"] == "dataset.json"


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_folder_and_tar(tmp_path: Path):
    d = _cifar10_dir(tmp_path / "ex")
    tr = load_dataset(str(d), resolution=32)
    te = load_dataset(str(tmp_path / "ex"), resolution=32, split="test")  # parent folder is found too
    assert tr.images.shape == (20, 3, 32, 32) and te.images.shape == (4, 3, 32, 32)
    assert tr.class_names[:2] == ["class0", "class1"] and tr.info["format"] == "cifar10_folder"
    with open(d / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert np.array_equal(tr.images[:4], raw[b"data"].reshape(4, 3, 32, 32))  # row layout = CHW
    assert tr.labels[:4].tolist() == raw[b"labels"]
    tpath = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        tf.add(d, arcname="cifar-10-batches-py")
    tt = load_dataset(str(tpath), resolution=16)
    assert tt.info["format"] == "cifar10_tar" and tt.images.shape == (20, 3, 16, 16)
    assert tt.labels.tolist() == tr.labels.tolist()
    with pytest.raises(DataError, match="split 'val'.*train, test"):
        load_dataset(str(tpath), resolution=32, split="val")


def test_cifar100_folder_uses_fine_labels(tmp_path: Path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(1)
    with open(d / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}, f, protocol=2)
    for name, n in (("train", 6), ("test", 3)):
        with open(d / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"fine_labels": list(range(90, 90 + n)), b"coarse_labels": [0] * n}, f, protocol=2)
    ds = load_dataset(str(d), resolution=32)
    assert ds.info["format"] == "cifar100_folder" and len(ds.class_names) == 100
    assert ds.labels.tolist() == list(range(90, 96))
    assert len(load_dataset(str(d), resolution=32, split="test")) == 3


def test_cifar_pickle_with_code_is_refused(tmp_path: Path):
    d = _cifar10_dir(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(d / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="not allowed"):
        load_dataset(str(d), resolution=32)


# --------------------------------------------------------------------------- idx


@pytest.mark.parametrize("gz", [False, True])
def test_idx_file_and_folder(tmp_path: Path, gz: bool):
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 7).astype(np.uint8)
    xt = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    ext = ".gz" if gz else ""
    write = (lambda p, b: p.write_bytes(gzip.compress(b))) if gz else (lambda p, b: p.write_bytes(b))
    write(tmp_path / f"train-images-idx3-ubyte{ext}", _idx_bytes(x))
    write(tmp_path / f"train-labels-idx1-ubyte{ext}", _idx_bytes(y))
    write(tmp_path / f"t10k-images-idx3-ubyte{ext}", _idx_bytes(xt))
    ds = load_dataset(str(tmp_path / f"train-images-idx3-ubyte{ext}"), resolution=28, channels=1, resize="none")
    assert ds.info["format"] == "idx" and np.array_equal(ds.images[:, 0], x)
    assert ds.labels.tolist() == y.tolist()
    folder = load_dataset(str(tmp_path), resolution=32)
    assert folder.info["format"] == "idx_folder" and folder.images.shape == (7, 3, 32, 32)
    test = load_dataset(str(tmp_path), resolution=28, split="test")
    assert len(test) == 3 and test.labels is None and test.info["split"] == "test"


def test_idx_bad_magic_and_truncated(tmp_path: Path):
    x = np.zeros((4, 8, 8), np.uint8)
    bad = bytearray(_idx_bytes(x))
    bad[2] = 0x09
    (tmp_path / "a-images-idx3-ubyte").write_bytes(bytes(bad))
    with pytest.raises(DataError, match="magic number"):
        load_dataset(str(tmp_path / "a-images-idx3-ubyte"), resolution=8)
    (tmp_path / "b-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(x)[:-10]))
    with pytest.raises(DataError, match="truncated"):
        load_dataset(str(tmp_path / "b-images-idx3-ubyte.gz"), resolution=8)


# --------------------------------------------------------------------------- npz


def test_npz_train_test_keys_nhwc(tmp_path: Path):
    rng = np.random.default_rng(3)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8), y_train=np.arange(6) % 3,
             x_test=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), y_test=np.array([0, 1]),
             label_names=np.array(["a", "b", "c"]))
    ds = load_dataset(str(p), resolution=32)
    assert ds.images.shape == (6, 3, 32, 32) and ds.class_names == ["a", "b", "c"]
    assert np.array_equal(ds.images, np.load(p)["x_train"].transpose(0, 3, 1, 2))
    assert load_dataset(str(p), resolution=32, split="test").labels.tolist() == [0, 1]
    with pytest.raises(DataError, match="split 'valid'"):
        load_dataset(str(p), resolution=32, split="valid")


def test_npz_images_key_nchw_float_and_x_key_nhw(tmp_path: Path):
    f = np.random.default_rng(4).random((5, 3, 16, 16))
    np.savez(tmp_path / "a.npz", images=f, labels=np.array([0, 1, 0, 1, 1]))
    ds = load_dataset(str(tmp_path / "a.npz"), resolution=16)
    assert np.array_equal(ds.images, np.rint(f * 255).astype(np.uint8)) and ds.class_names == ["0", "1"]
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 10, 10), np.uint8))
    b = load_dataset(str(tmp_path / "b.npz"), resolution=10)
    assert b.images.shape == (3, 3, 10, 10) and b.labels is None
    with pytest.raises(DataError, match="no 'test' split"):
        load_dataset(str(tmp_path / "b.npz"), resolution=10, split="test")
    np.savez(tmp_path / "c.npz", images=f * 2)
    with pytest.raises(DataError, match=r"must be in\s+\[0, 1\]"):
        load_dataset(str(tmp_path / "c.npz"), resolution=16)
    np.savez(tmp_path / "d.npz", pixels=f)
    with pytest.raises(DataError, match="no image array.*x_train"):
        load_dataset(str(tmp_path / "d.npz"), resolution=16)


def test_npz_layout_ties_prefer_square_images_and_refuse_the_rest():
    from degan.data.formats import array_to_nchw

    assert array_to_nchw(np.zeros((2, 4, 4, 3), np.uint8), "x")[1] == "NHWC"  # 4x4 RGB, not 4x3 RGBA
    assert array_to_nchw(np.zeros((2, 3, 4, 4), np.uint8), "x")[1] == "NCHW"  # 4x4 RGB, not 3x4 RGBA
    assert array_to_nchw(np.zeros((2, 28, 28), np.uint8), "x")[1] == "NHW"
    for shape in [(2, 3, 3, 3), (2, 3, 16, 3)]:
        with pytest.raises(DataError, match="ambiguous"):
            array_to_nchw(np.zeros(shape, np.uint8), "x")
    with pytest.raises(DataError, match=r"one HxWxC image.*\(1, 16, 16, 3\)"):
        array_to_nchw(np.zeros((16, 16, 3), np.uint8), "x")
    with pytest.raises(DataError, match="1 NaN/inf"):
        array_to_nchw(np.array([[[0.5, np.nan]]], np.float32), "x")


# --------------------------------------------------------------------------- builtin and real data


def test_faces100():
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        pytest.skip("scikit-image not installed: faces100 needs its lfw_subset.npy")
    ds = load_dataset("faces100", resolution=32, channels=3)
    assert ds.images.shape == (100, 3, 32, 32) and ds.images.dtype == np.uint8
    assert ds.images.std() > 10 and len(np.unique(ds.images)) > 100
    assert np.array_equal(ds.images[:, 0], ds.images[:, 2])
    native = load_dataset("faces100", resolution=25, channels=1)
    raw = np.load(Path(spec.submodule_search_locations[0]) / "data" / "lfw_subset.npy")[:100]
    assert np.array_equal(native.images[:, 0], np.rint(raw * 255).astype(np.uint8))
    assert dataset_id("faces100") == "faces100"


@pytest.mark.slow  # real data from the shared folder
def test_real_cifar10_subset_npz(shared_data):
    p = shared_data / "cifar10-subset" / "cifar10_prefix_subset.npz"
    if not p.exists():
        pytest.skip(f"real CIFAR-10 subset absent ({p})")
    ds = load_dataset(str(p), resolution=32)
    assert ds.images.shape == (5085, 3, 32, 32) and ds.labels.shape == (5085,)
    assert ds.class_names[0] == "airplane" and ds.info["num_resampled"] == 0
    counts = np.bincount(ds.labels)
    assert counts.min() >= 475 and counts.max() <= 537
    idx = select_subset(len(ds), 0.1, seed=0, labels=ds.labels, balance=True)
    assert len(idx) == 509 and set(np.bincount(ds.labels[idx]).tolist()) == {50, 51}


@pytest.mark.slow  # real data from the shared folder
def test_real_fashion_mnist(shared_data):
    d = shared_data / "fashion-mnist"
    if not d.exists():
        pytest.skip(f"real Fashion-MNIST absent ({d})")
    ds = load_dataset(str(d), resolution=32)
    assert ds.images.shape == (60000, 3, 32, 32) and ds.class_names[9] == "Ankle boot"
    assert np.bincount(ds.labels).tolist() == [6000] * 10
    te = load_dataset(str(d / "t10k-images-idx3-ubyte.gz"), resolution=28, channels=1)
    assert te.images.shape == (10000, 1, 28, 28) and te.info["split"] == "test"


# --------------------------------------------------------------------------- resize policies


def test_resize_policies(tmp_path: Path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :10] = 255  # left quarter white: cropped away by center_crop
    a[:, 30:] = 100
    for i in range(2):
        _save(tmp_path / "w" / f"{i}.png", Image.fromarray(a))
    cc = load_dataset(str(tmp_path / "w"), resolution=10)
    assert cc.images.shape == (2, 3, 10, 10) and cc.images.max() < 128  # no white left
    st = load_dataset(str(tmp_path / "w"), resolution=10, resize="stretch")
    assert st.images[0, 0, 5, 0] == 255 and st.images[0, 0, 5, 9] == 100
    assert cc.info["resize"] == "center_crop" and "bicubic" in cc.info["resample"]
    with pytest.raises(DataError, match="resize='none' needs every image to be 10x10.*40x20"):
        load_dataset(str(tmp_path / "w"), resolution=10, resize="none")
    with pytest.raises(DataError, match="unknown resize policy 'squash'"):
        load_dataset(str(tmp_path / "w"), resolution=10, resize="squash")
    with pytest.raises(DataError, match="channels must be 1"):
        load_dataset(str(tmp_path / "w"), resolution=10, channels=2)


# --------------------------------------------------------------------------- source errors


def test_source_errors(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist.*faces100"):
        load_dataset(str(tmp_path / "nope"), resolution=8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=r"no images found.*\.png.*\.webp"):
        load_dataset(str(tmp_path / "empty"), resolution=8)
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as zf:
        zf.writestr("a.txt", "x")
    with pytest.raises(DataError, match=r"no images found in zip.*\.jpg"):
        load_dataset(str(tmp_path / "e.zip"), resolution=8)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        load_dataset(str(tmp_path / "bad.zip"), resolution=8)
    (tmp_path / "data.csv").write_text("1,2,3")
    with pytest.raises(DataError, match="unrecognised data source.*Supported.*idx.*npz.*zip"):
        load_dataset(str(tmp_path / "data.csv"), resolution=8)
    _save(tmp_path / "f" / "a.png", _img("RGB", (8, 8)))
    _save(tmp_path / "f" / "b.png", _img("RGB", (8, 8)))
    with pytest.raises(DataError, match="split 'test' is not available"):
        load_dataset(str(tmp_path / "f"), resolution=8, split="test")
    with pytest.raises(DataError, match="min_images=3"):
        load_dataset(str(tmp_path / "f"), resolution=8, min_images=3)


def test_dataset_id_stable_and_sensitive(tmp_path: Path):
    _save(tmp_path / "my data" / "a.png", _img("RGB", (8, 8)))
    i1 = dataset_id(str(tmp_path / "my data"))
    assert i1 == dataset_id(str(tmp_path / "my data" / ".." / "my data")) and i1.startswith("my_data-")
    _save(tmp_path / "my data" / "b.png", _img("RGB", (8, 8)))
    assert dataset_id(str(tmp_path / "my data")) != i1
    with pytest.raises(DataError, match="does not exist"):
        dataset_id(str(tmp_path / "missing"))


# --------------------------------------------------------------------------- subsets


def test_parse_subset():
    assert parse_subset("0.1") == ("fraction", 0.1) and parse_subset(0.1) == ("fraction", 0.1)
    assert parse_subset("500") == ("count", 500) and parse_subset(500) == ("count", 500)
    assert parse_subset("10%") == ("fraction", 0.1)
    for whole in (None, "all", "1.0", 1.0, " ALL "):
        assert parse_subset(whole) is None
    assert parse_subset(1) == ("count", 1)
    for bad, msg in [("0", "count must be >= 1"), (-3, "count must be >= 1"), ("0.0", r"fraction must be in \(0, 1\]"),
                     (1.5, "fraction must be in"), ("ten", "not a number"), (float("nan"), "fraction"),
                     (True, "fraction in")]:
        with pytest.raises(DataError, match=msg):
            parse_subset(bad)


def test_select_subset_deterministic_and_math():
    a = select_subset(1000, 0.1, seed=0)
    assert a.dtype == np.int64 and len(a) == 100 and np.array_equal(a, np.sort(np.unique(a)))
    assert np.array_equal(a, select_subset(1000, "0.1", seed=0))
    assert not np.array_equal(a, select_subset(1000, 0.1, seed=1))
    assert len(select_subset(5085, 0.1)) == 509  # 508.5 rounds half up
    assert len(select_subset(10, 0.01)) == 1  # max(1, ...)
    assert len(select_subset(1000, 37, seed=3)) == 37
    assert np.array_equal(select_subset(1000, 5, mode="first"), np.arange(5))
    assert np.array_equal(select_subset(10, None), np.arange(10))
    assert np.array_equal(select_subset(10, 10, seed=5), np.arange(10))
    # pinned values: torch.randperm with a seeded CPU generator is stable
    import torch
    expect = np.sort(torch.randperm(20, generator=torch.Generator().manual_seed(7)).numpy()[:4])
    assert np.array_equal(select_subset(20, 4, seed=7), expect)


def test_select_subset_balance():
    labels = np.repeat(np.arange(4), [50, 30, 20, 100])
    idx = select_subset(200, 42, seed=1, labels=labels, balance=True)
    assert len(idx) == 42 and np.bincount(labels[idx], minlength=4).tolist() == [11, 11, 10, 10]
    assert np.array_equal(idx, select_subset(200, 42, seed=1, labels=labels, balance=True))
    assert not np.array_equal(idx, select_subset(200, 42, seed=2, labels=labels, balance=True))
    first = select_subset(200, 8, mode="first", labels=labels, balance=True)
    assert first.tolist() == [0, 1, 50, 51, 80, 81, 100, 101]
    assert len(select_subset(200, 0.5, seed=0, labels=labels, balance=False)) == 100
    with pytest.raises(DataError, match="largest reachable balanced subset is 82 "):
        select_subset(200, 0.5, labels=labels, balance=True)
    with pytest.raises(DataError, match="needs class labels"):
        select_subset(200, 10, balance=True)


def test_select_subset_errors():
    with pytest.raises(DataError, match="has only 100"):
        select_subset(100, 101)
    with pytest.raises(DataError, match="unknown subset mode 'last'.*random, first"):
        select_subset(100, 10, mode="last")
    with pytest.raises(DataError, match="not a number"):
        select_subset(100, "some")
    with pytest.raises(DataError, match=r"fraction must be in \(0, 1\]"):
        select_subset(100, 1.2)
    with pytest.raises(DataError, match="labels have shape"):
        select_subset(100, 10, labels=np.zeros(5, np.int64), balance=True)


def test_imageset_subset():
    ds = ImageSet(np.arange(5 * 3 * 4 * 4, dtype=np.uint8).reshape(5, 3, 4, 4), np.arange(5), ["a"] * 5, {"x": 1})
    sub = ds.subset(np.array([1, 3]))
    assert len(sub) == 2 and sub.labels.tolist() == [1, 3] and sub.info["subset_size"] == 2 and "subset_size" not in ds.info


def test_faces100_without_skimage_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(DataError, match="pip install scikit-image"):
        load_dataset("faces100", resolution=32)


def test_symlink_loop_is_walked_once(tmp_path: Path):
    """A folder with 5 images and a symlink pointing back to itself is 5 images, not 5 per pass of the loop."""
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(d / f"{i}.png")
    os.symlink(d, d / "loop")
    os.symlink(tmp_path, d / "up")  # a loop through the parent
    assert len(load_dataset(str(d), resolution=8)) == 5
    # a symlink to a folder outside the tree is still followed
    other = tmp_path.parent / f"{tmp_path.name}-outside"
    other.mkdir()
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(other / "x.png")
    os.symlink(other, d / "more")
    assert len(load_dataset(str(d), resolution=8)) == 6
