"""The bad-input battery (issue 17): every case runs the real ``degan`` command on one piece of bad input and must end
with exit status 2, exactly one ``error:`` line that names the problem and says what would work, no traceback, and
no change to any existing run folder (file listing + SHA-256 of every file, before and after).

Cases run in process (``click.testing.CliRunner`` on :func:`degan.cli.main`); only the read-only ``--outdir`` case
starts a process (it needs another user's permissions when the tests run as root). Inputs where degan sensibly
works (mixed sizes and modes, a symlink loop, identical images) are at the end and assert success instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image

from degan.cli import main

#: the smallest training the CLI runs: dcgan at 16 px, quarter width, 2 steps of 4 images, no metrics
TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "4", "--kimg", "0.008",
        "--snap", "0.008", "--metrics", "none", "--no-progress"]


def invoke(argv: list) -> Result:
    return CliRunner().invoke(main, [str(a) for a in argv], catch_exceptions=False)


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``root`` (folders as ``"<dir>"``)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "<dir>" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def save_png(path: Path, size=(16, 16), seed: int = 0, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def png_bytes(seed: int = 0, size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


class CodeOnLoad:
    """Unpickling this creates the file ``marker`` (``builtins.open(marker, "w")``): a stand-in for any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ---------------------------------------------------------------------------------------------------------------------
# shared inputs: a good image folder and one finished tiny run (never written by a case: every case checks it)


@dataclass
class Base:
    images: Path  # 8 RGB 16x16 PNGs, no labels
    run: Path  # a finished `degan train` run on ``images`` with TINY


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("bad-input-base")
    images = root / "images"
    for i in range(8):
        save_png(images / f"{i}.png", seed=i)
    outdir = root / "runs"
    res = invoke(["train", "--data", images, "--outdir", outdir, *TINY])
    assert res.exit_code == 0, res.output
    (run,) = outdir.iterdir()
    assert (run / "level_0" / "done.json").is_file()
    return Base(images, run)


@dataclass
class Ctx:
    """What a case's setup gets: a fresh folder, the shared inputs, and where it may register more folders to check."""

    tmp: Path
    base: Base
    watch: list[Path] = field(default_factory=list)
    markers: list[Path] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def train(self, data, *extra) -> list:
        """``degan train`` of ``data`` into ``out`` with TINY; ``extra`` comes last, so it may override an option."""
        return ["train", "--data", data, "--outdir", self.out, *TINY, *extra]

    def copy_run(self, unfinished: bool = False) -> Path:
        """A copy of the base run in ``tmp/runs`` (same folder name, so the same TINY command line resumes it)."""
        dst = self.tmp / "runs" / self.base.run.name
        shutil.copytree(self.base.run, dst)
        if unfinished:
            (dst / "level_0" / "done.json").unlink()
        self.watch.append(dst)
        return dst

    def resume(self, run: Path) -> list:
        return ["train", "--data", self.base.images, "--outdir", run.parent, *TINY, "--resume", "latest"]

    def marker(self) -> Path:
        m = self.tmp / "code-ran.marker"
        self.markers.append(m)
        return m

    def evil_pickle(self, path: Path) -> Path:
        """``path`` holds a torch.save pickle whose loading (without weights_only) creates a marker file."""
        marker = self.marker()
        torch.save({"state": CodeOnLoad(marker)}, path)
        torch.load(path, weights_only=False)  # the payload is live: loading it unguarded runs it ...
        assert marker.is_file()
        marker.unlink()  # ... and the case then checks that degan does not
        return path


# ---------------------------------------------------------------------------------------------------------------------
# the cases: setup(ctx) -> argv, and what the error line must say (the problem, then what would work)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Ctx], list]
    problem: str  # regex the error line matches (case-insensitive)
    remedy: str  # regex for the "what would work" part


def _folder(ctx: Ctx, files: dict[str, bytes]) -> Path:
    d = ctx.tmp / "data"
    d.mkdir()
    for name, data in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    return d


def _npz(ctx: Ctx, **arrays) -> Path:
    p = ctx.tmp / "data.npz"
    np.savez(p, **arrays)
    return p


def _zip(ctx: Ctx, members: dict[str, bytes]) -> Path:
    p = ctx.tmp / "data.zip"
    with zipfile.ZipFile(p, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return p


def _zip_bytes(ctx: Ctx, data: bytes) -> Path:
    p = ctx.tmp / "data.zip"
    p.write_bytes(data)
    return p


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _with(x: np.ndarray, value: float) -> np.ndarray:
    x = x.astype(np.float32)
    x[0, 0, 0, 0] = value
    return x


def _file(ctx: Ctx) -> Path:
    p = ctx.tmp / "a-file"
    p.write_text("not a folder")
    return p


def _u8(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _config(ctx: Ctx, content: str | bytes) -> list:
    p = ctx.tmp / "config.yaml"
    p.write_bytes(content.encode() if isinstance(content, str) else content)
    return ctx.train(ctx.base.images, "--config", p)


def _truncated_checkpoint(ctx: Ctx) -> list:
    run = ctx.copy_run(unfinished=True)
    ckpt = sorted((run / "level_0" / "checkpoints").glob("ckpt-*.pt"))[-1]
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return ctx.resume(run)


def _wider_networks():
    """G and D of another model: the base run's dcgan at twice the width."""
    from degan.config import resolve
    from degan.lottery.experiment import build_networks

    return build_networks(resolve("dcgan", None, ["model.width=0.5", "data.resolution=16"], {}))


def _other_model_checkpoint(ctx: Ctx) -> list:
    run = ctx.copy_run(unfinished=True)
    ckpt = sorted((run / "level_0" / "checkpoints").glob("ckpt-*.pt"))[-1]
    payload = torch.load(ckpt, weights_only=True)
    G, D = _wider_networks()
    payload["state"].update(G=G.state_dict(), G_ema=G.state_dict(), D=D.state_dict())
    torch.save(payload, ckpt)
    return ctx.resume(run)


def _other_model_init(ctx: Ctx) -> list:
    run = ctx.copy_run()
    init = torch.load(run / "init.pt", weights_only=True)
    init["G"] = _wider_networks()[0].state_dict()
    torch.save(init, run / "init.pt")
    return ctx.train(ctx.base.images, "--ticket", run / "level_0")


def _code_checkpoint(ctx: Ctx) -> list:
    run = ctx.copy_run(unfinished=True)
    ckpt = sorted((run / "level_0" / "checkpoints").glob("ckpt-*.pt"))[-1]
    ctx.evil_pickle(ckpt)
    return ctx.resume(run)


def _code_init(ctx: Ctx) -> list:
    run = ctx.copy_run()
    ctx.evil_pickle(run / "init.pt")
    return ctx.train(ctx.base.images, "--ticket", run / "level_0")


def _mask_file(ctx: Ctx, edit: Callable[[dict], None]) -> list:
    from safetensors.torch import load_file, save_file

    run = ctx.copy_run()
    path = run / "level_0" / "masks.safetensors"
    masks = load_file(str(path))
    edit(masks)
    save_file(masks, str(path))
    return ctx.train(ctx.base.images, "--ticket", run / "level_0")


def _wrong_shape(masks: dict) -> None:
    key = next(k for k in masks if k.startswith("G."))
    masks[key] = torch.ones(*masks[key].shape[:-1], masks[key].shape[-1] + 1, dtype=torch.bool)


def _non_binary(masks: dict) -> None:
    key = next(k for k in masks if k.startswith("G."))
    masks[key] = torch.full(masks[key].shape, 0.5)


def _cifar_code(ctx: Ctx) -> list:
    import pickle

    d = ctx.tmp / "cifar-10-batches-py"
    d.mkdir()
    marker = ctx.marker()
    for name in ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]:
        with open(d / name, "wb") as f:
            pickle.dump({b"data": CodeOnLoad(marker), b"labels": [], b"label_names": []}, f)
    return ctx.train(d)


def _two_level_run(ctx: Ctx) -> Path:
    run = ctx.copy_run()
    shutil.copytree(run / "level_0", run / "level_1")
    return run


def _readonly_outdir(ctx: Ctx) -> list:
    ro = ctx.tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    return ctx.train(ctx.base.images, "--outdir", ro / "runs")


CASES = [
    # --- image folders
    Case("empty-folder", lambda c: c.train(_folder(c, {})), r"no images found", r"folder or zip that contains images"),
    Case("text-only-folder", lambda c: c.train(_folder(c, {"notes.txt": b"hello", "labels.csv": b"a,1\n"})),
         r"no images found", r"folder or zip that contains images"),
    Case("zero-byte-images", lambda c: c.train(_folder(c, {"a.png": b"", "b.png": b""})),
         r"0 usable image.*a\.png.*0 bytes", r"replace or remove"),
    Case("truncated-images", lambda c: c.train(_folder(c, {f"{i}.png": png_bytes(i)[:60] for i in range(3)})),
         r"0 usable image.*truncat", r"replace or remove"),
    Case("fake-extension", lambda c: c.train(_folder(c, {"a.png": b"just text", "b.jpg": b"%PDF-1.4"})),
         r"0 usable image.*not a recognised image", r"replace or remove"),
    Case("single-image", lambda c: c.train(_folder(c, {"only.png": png_bytes()})),
         r"only 1 usable image", r"add images until at least 2 can be read"),
    Case("labels-of-mismatched-length",
         lambda c: c.train(_folder(c, {"a.png": png_bytes(0), "b.png": png_bytes(1),
                                       "dataset.json": json.dumps({"labels": [["a.png", 0]]}).encode()})),
         r"dataset\.json.*no label for 1 image", r"add them or delete dataset\.json"),
    Case("cond-on-unlabelled-data", lambda c: c.train(c.base.images, "--cond"),
         r"needs class labels.*has none", r"labelled source|drop --cond"),
    Case("run-folder-as-data", lambda c: c.train(c.base.run), r"is a degan run folder", r"image folder"),
    Case("checkpoint-file-as-data",
         lambda c: c.train(sorted((c.base.run / "level_0" / "checkpoints").glob("*.pt"))[-1]),
         r"unrecognised data source", r"supported"),
    Case("checkpoints-folder-as-data", lambda c: c.train(c.base.run / "level_0" / "checkpoints"),
         r"(no images found|degan run folder)", r"(folder or zip that contains images|image folder)"),
    Case("cifar-pickle-that-runs-code", _cifar_code, r"not allowed", r"trust|genuine|re-download"),
    # --- archives
    Case("corrupt-zip", lambda c: c.train(_zip_bytes(c, b"PK\x03\x04 this is not really a zip")),
         r"not a readable zip", r"re-create"),
    Case("zip-slip", lambda c: c.train(_zip(c, {"../../escape.png": png_bytes(0), "/abs/escape.png": png_bytes(1),
                                              "ok/a.png": png_bytes(2)})),
         r"outside the archive.*\.\./\.\./escape\.png", r"re-create the archive"),
    # --- numpy .npz
    Case("npz-wrong-keys", lambda c: c.train(_npz(c, pictures=_u8(8, 16, 16, 3))),
         r"no image array", r"expected keys x_train"),
    Case("npz-float-0-255", lambda c: c.train(_npz(c, x=_u8(8, 16, 16, 3).astype(np.float32))),
         r"float with values in \[0, 25\d\]", r"must be in \[0, 1\]"),
    Case("npz-truncated", lambda c: c.train(_truncate(_npz(c, x=_u8(8, 16, 16, 3)))),
         r"cannot read .*\.npz", r"re-create|numpy\.savez"),
    Case("npz-nan", lambda c: c.train(_npz(c, x=_with(np.random.default_rng(0).random((8, 16, 16, 3)), np.nan))),
         r"NaN", r"finite"),
    Case("npz-inf", lambda c: c.train(_npz(c, x=_with(np.random.default_rng(0).random((8, 16, 16, 3)), np.inf))),
         r"inf", r"finite"),
    Case("npz-2d-array", lambda c: c.train(_npz(c, x=_u8(8, 256))), r"shape \(8, 256\)", r"expected images as NHWC"),
    Case("npz-single-hwc-image-as-3d", lambda c: c.train(_npz(c, x=_u8(16, 16, 3))),
         r"shape \(16, 16, 3\)", r"\(1, 16, 16, 3\)|NHWC"),
    Case("npz-ambiguous-nchw-nhwc", lambda c: c.train(_npz(c, x=_u8(8, 3, 16, 3))),
         r"ambiguous", r"NHWC"),
    Case("npz-labels-of-mismatched-length", lambda c: c.train(_npz(c, x=_u8(8, 16, 16, 3), y=np.arange(5))),
         r"'y' must be integer class indices of shape \(8,\)", r"shape \(8,\)"),
    # --- resume / ticket files
    Case("resume-truncated-checkpoint", _truncated_checkpoint, r"ckpt-\d+\.pt' cannot be read.*truncated",
         r"delete it \(resuming then continues from the checkpoint before it\)"),
    Case("resume-checkpoint-of-another-model", _other_model_checkpoint, r"does not fit this model",
         r"same --model, width and resolution"),
    Case("resume-pickle-that-runs-code", _code_checkpoint, r"ckpt-\d+\.pt' holds Python objects other than tensors.*"
         r"could run code, so it is refused", r"delete it"),
    Case("ticket-init-pickle-that-runs-code", _code_init,
         r"initial weights '.*init\.pt' holds Python objects other than tensors", r"train the ticket run again"),
    Case("ticket-init-of-another-model", _other_model_init, r"the ticket .* initial weights of G that do not fit",
         r"train it with the model settings it was drawn with"),
    Case("ticket-mask-wrong-shape", lambda c: _mask_file(c, _wrong_shape),
         r"the ticket .* does not fit this model: mask \S+ has shape", r"train it with the model settings"),
    Case("ticket-mask-non-binary", lambda c: _mask_file(c, _non_binary), r"non-binary values", r"0/1 or bool"),
    Case("ticket-is-a-run-not-a-level", lambda c: c.train(c.base.images, "--ticket", _two_level_run(c)),
         r"expects one level folder .* with 2 levels", r"pass one of them, e\.g\. \S+/level_1"),
    # --- config
    Case("yaml-unknown-key", lambda c: _config(c, "train:\n  total_kimgs: 1\n"),
         r"unknown config key 'train\.total_kimgs'", r"valid keys here are: .*total_kimg"),
    Case("yaml-wrong-type", lambda c: _config(c, "train:\n  batch_D: lots\n"), r"train\.batch_D must be an integer",
         r"integer"),
    Case("yaml-infinite-integer", lambda c: _config(c, "train:\n  n_dis: .inf\n"), r"train\.n_dis must be an integer",
         r"integer"),
    Case("yaml-not-a-mapping", lambda c: _config(c, "- train\n- kimg\n"), r"must hold a mapping.*not a list",
         r"e\.g\. 'train: \{total_kimg: 50\}'"),
    Case("yaml-invalid-syntax", lambda c: _config(c, "train:\n  total_kimg: [1,\n"), r"not valid YAML/JSON text",
         r"e\.g\. 'train: \{total_kimg: 50\}'"),
    Case("config-binary-file", lambda c: _config(c, bytes(range(256))), r"not valid YAML/JSON text",
         r"e\.g\. 'train: \{total_kimg: 50\}'"),
    Case("negative-kimg", lambda c: c.train(c.base.images, "--kimg", "-1"), r"train\.total_kimg must be > 0", r"> 0"),
    Case("batch-0", lambda c: c.train(c.base.images, "--batch", "0"), r"train\.batch_D must be > 0", r"> 0"),
    Case("subset-0", lambda c: c.train(c.base.images, "--subset", "0"), r"subset count must be >= 1", r">= 1"),
    Case("subset-2.0", lambda c: c.train(c.base.images, "--subset", "2.0"), r"subset fraction must be in \(0, 1\]",
         r"for a count of images write an integer"),
    Case("subset-larger-than-data", lambda c: c.train(c.base.images, "--subset", "50"),
         r"subset of 50 images .* only 8", r"at most 8"),
    Case("resolution-the-model-cannot-build", lambda c: c.train(c.base.images, "--resolution", "20"),
         r"resolution", r"\b(16|32|64)\b"),
    # --- output folders
    Case("outdir-is-a-file", lambda c: c.train(c.base.images, "--outdir", _file(c)), r"is a file", r"folder|directory"),
    Case("outdir-below-a-file", lambda c: c.train(c.base.images, "--outdir", _file(c) / "runs"),
         r"--outdir .* is below .*a-file', which is a file", r"choose a folder"),
    Case("readonly-outdir", _readonly_outdir, r"--outdir .* is not writable", r"choose a folder you can write to"),
    # --- other commands
    Case("eval-on-a-folder-that-is-not-a-run", lambda c: ["eval", c.base.images, "--metrics", "none"],
         r"not a degan run folder", r"runs/<run> or runs/<run>/level_<k>"),
    Case("generate-seeds-5-1", lambda c: ["generate", c.base.run, "--seeds", "5-1"], r"'5-1' is empty",
         r"low to high, e\.g\. 1-5"),
    Case("branch-unknown-kind", lambda c: ["branch", c.base.run / "level_0", "random_tickett"],
         r"random_tickett", r"random_ticket"),
]


def test_the_battery_has_at_least_30_error_cases():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


def _run_readonly_as_unprivileged(argv: list, ctx: Ctx):
    """Root ignores permission bits: run the command in a user namespace where the read-only folder belongs to an
    unmapped user (so its mode 0555 applies). Returns ``(exit code, stdout, stderr)``."""
    if shutil.which("unshare") is None:
        pytest.skip("running as root and `unshare` is missing: cannot make a folder read-only")
    ro = ctx.tmp / "readonly"
    os.chown(ro, 12345, 12345)
    probe = subprocess.run(["unshare", "-r", "mkdir", str(ro / "probe")], capture_output=True)
    if probe.returncode == 0 or (ro / "probe").exists():
        pytest.skip("cannot make a folder read-only for this (root) process")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("DEGAN_DEBUG", None)
    p = subprocess.run(["unshare", "-r", sys.executable, "-m", "degan.cli", *[str(a) for a in argv]],
                       capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, p.stdout, p.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_error(case: Case, base: Base, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("DEGAN_DEBUG", raising=False)
    ctx = Ctx(tmp_path, base)
    argv = case.setup(ctx)
    watched = [base.run, *ctx.watch]
    before = [snapshot(d) for d in watched]
    if case.id == "readonly-outdir" and os.geteuid() == 0:
        code, stdout, stderr = _run_readonly_as_unprivileged(argv, ctx)
    else:
        res = invoke(argv)
        code, stdout, stderr = res.exit_code, res.stdout, res.stderr
    output = stdout + stderr
    assert code == 2, output
    assert "Traceback" not in output, output
    # degan's errors are one "error: ..." line; what click itself refuses (an unknown choice, an --outdir that is a
    # file) keeps click's format: a usage line, then one "Error: ..." line
    errors = [ln for ln in stderr.splitlines() if ln.startswith(("error: ", "Error: "))]
    assert len(errors) == 1, output
    line = errors[0]
    assert stderr.rstrip().splitlines()[-1] == line, output  # the error is the last thing said, on one line
    assert re.search(case.problem, line, re.IGNORECASE), line
    assert re.search(case.remedy, line, re.IGNORECASE), line
    for d, snap in zip(watched, before):
        assert snapshot(d) == snap, f"{d} changed"
    for m in ctx.markers:
        assert not m.exists(), f"code in a pickle ran: {m} was created"
    # a refused training leaves no run folder behind
    assert not ctx.out.exists() or not any(ctx.out.iterdir()), sorted(ctx.out.rglob("*"))


# ---------------------------------------------------------------------------------------------------------------------
# inputs that degan handles on purpose: they train (not counted among the error cases)


def _mixed_sizes_and_modes(d: Path) -> None:
    save_png(d / "rgb.png", (16, 16), 0)
    save_png(d / "wide.png", (40, 12), 1)
    save_png(d / "gray.png", (9, 30), 2, mode="L")
    save_png(d / "rgba.png", (24, 24), 3, mode="RGBA")
    save_png(d / "palette.png", (20, 20), 4, mode="P")
    Image.fromarray(_u8(18, 18, 3, seed=5)).save(d / "photo.jpg")


def _symlink_loop(d: Path) -> None:
    for i in range(4):
        save_png(d / f"{i}.png", seed=i)
    os.symlink(d, d / "loop")


def _identical(d: Path) -> None:
    for i in range(4):
        save_png(d / f"{i}.png", seed=0)


@pytest.mark.parametrize("make,note", [
    (_mixed_sizes_and_modes, None),
    (_symlink_loop, None),
    (_identical, r"identical"),
], ids=["mixed-sizes-and-modes-are-resized", "symlink-loop-is-read-once", "identical-images-train-with-a-warning"])
def test_inputs_degan_handles(make, note, tmp_path: Path):
    d = tmp_path / "data"
    d.mkdir()
    make(d)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = invoke(["train", "--data", d, "--outdir", tmp_path / "out", *TINY, "--kimg", "0.004"])
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "out").iterdir()
    info = json.loads((run / "data.json").read_text())
    assert info["num_usable"] == len([p for p in d.iterdir() if p.is_file()])
    assert (run / "level_0" / "done.json").is_file()
    if note:
        assert any(re.search(note, str(w.message)) for w in caught), [str(w.message) for w in caught]
