"""A full disk gets one clear message and a distinct exit code (28); nothing already written is damaged and the
run resumes once space is free."""

import errno
import shutil
from collections import namedtuple

import pytest
import torch
from click.testing import CliRunner
from conftest import random_image_folder

import degan.fileio as fileio
import degan.train.checkpoint as checkpoint
from degan.cli import main
from degan.errors import DiskFullError
from degan.fileio import append_jsonl, atomic_path


def test_enospc_in_an_atomic_write_is_disk_full_and_leaves_the_target(tmp_path):
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old")
    with pytest.raises(DiskFullError, match="the disk is full: writing ckpt.pt into") as info:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.exit_code == 28 and "--resume latest" in str(info.value)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_writer_error_is_disk_full_only_when_the_disk_is_full(tmp_path, monkeypatch):
    def torn(tmp):  # torch's zip writer on a full disk: RuntimeError("... unexpected pos ...")
        tmp.write_bytes(b"x" * 4096)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1082304 vs 1082192")

    with pytest.raises(RuntimeError, match="unexpected pos") as info:  # plenty of space: not a disk-full error
        with atomic_path(tmp_path / "a.pt") as tmp:
            torn(tmp)
    assert not isinstance(info.value, DiskFullError)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(3 << 20, (3 << 20) - 100, 100))
    with pytest.raises(DiskFullError, match=r"0\.0 MiB free"):
        with atomic_path(tmp_path / "a.pt") as tmp:
            torn(tmp)
    assert not list(tmp_path.iterdir())


def test_append_jsonl_on_a_full_disk(tmp_path, monkeypatch):
    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(DiskFullError, match="stats.jsonl"):
        append_jsonl(tmp_path / "stats.jsonl", {"a": 1})


def test_train_on_a_full_disk_stops_with_one_line_and_resumes(tmp_path, monkeypatch):
    d = random_image_folder(tmp_path / "imgs", 12)
    args = ["train", "--data", str(d), "--outdir", str(tmp_path / "runs"), "--model", "dcgan", "--width", "0.25",
            "--resolution", "16", "--batch", "8", "--kimg", "0.064", "--snap", "0.032", "--metrics", "none",
            "--no-progress"]
    real_save, calls = torch.save, []

    def save(obj, f, *a, **k):  # checkpoints at 0 and 32 images are written, the final one hits a full disk
        if ".ckpt-" in str(f):
            calls.append(f)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 28, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "the disk is full" in lines[0] and "Traceback" not in res.output
    (run,) = list((tmp_path / "runs").iterdir())
    ckpts = sorted((run / "level_0" / "checkpoints").glob("ckpt-*.pt"))
    assert torch.load(ckpts[-1], weights_only=True)["state"]["cur_nimg"] == 32
    assert not list(run.rglob("*.tmp")) and not (run / "level_0" / "done.json").exists()

    monkeypatch.setattr(checkpoint.torch, "save", real_save)  # space freed
    res = CliRunner().invoke(main, [*args, "--resume", "latest"])
    assert res.exit_code == 0, res.output
    assert "resuming level_0 from" in res.output and (run / "level_0" / "done.json").is_file()
    assert shutil.disk_usage(tmp_path).free > 0


def test_a_stage_warns_when_the_disk_is_too_small(tmp_path, monkeypatch):
    import degan.lottery.stage as stage

    d = random_image_folder(tmp_path / "imgs", 12)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, (1 << 30) - (1 << 19), 1 << 19))
    res = CliRunner().invoke(main, ["train", "--data", str(d), "--outdir", str(tmp_path / "runs"), "--model", "dcgan",
                                    "--width", "0.25", "--resolution", "16", "--batch", "8", "--kimg", "0.016",
                                    "--metrics", "none", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "has 0.5 MiB free but this stage writes about" in res.output
    monkeypatch.undo()
    (run,) = list((tmp_path / "runs").iterdir())
    import torch as _t

    ckpt = sorted((run / "level_0" / "checkpoints").glob("ckpt-*.pt"))[-1]
    state = _t.load(ckpt, weights_only=True)["state"]
    written = ckpt.stat().st_size
    est_one = sum(t.numel() * t.element_size() for k in ("G", "D", "G_ema") for t in state[k].values())
    assert est_one <= written  # the estimate's parts are all in a real checkpoint
    assert stage.stage_bytes_needed.__doc__


def test_a_feature_cache_that_cannot_be_written_is_skipped_with_a_warning(tmp_path, monkeypatch):
    from degan.metrics.evaluate import RealFeatureCache

    cache = RealFeatureCache(tmp_path / "reference-features")
    real_save = torch.save

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.warns(UserWarning, match="could not write the feature cache .*continuing without caching"):
        out = cache.get_or_compute({"k": 1}, lambda: torch.ones(3, 2))
    assert out.dtype == torch.float64 and torch.equal(out, torch.ones(3, 2, dtype=torch.float64))
    assert not list((tmp_path / "reference-features").glob("*.pt"))  # nothing half-written
    monkeypatch.setattr(torch, "save", real_save)
    assert cache.load({"k": 1}) is None  # and the next run computes and caches it
    cache.get_or_compute({"k": 1}, lambda: torch.ones(3, 2))
    assert cache.load({"k": 1}) is not None


def _can_mount_tmpfs() -> bool:
    import subprocess

    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt && echo ok"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and "ok" in probe.stdout


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -rm` to mount a small tmpfs (user namespaces)")
def test_a_real_3mb_file_system_fills_up_then_the_run_resumes_once_it_grows(tmp_path):
    """A real full disk (a 3 MB tmpfs, no monkeypatching): exit 28 with one line; after the file system grows,
    --resume latest finishes the run."""
    import subprocess
    import sys

    out = tmp_path / "small"
    out.mkdir()
    cmd = (f"{sys.executable} -m degan.cli train --data faces100 --outdir {out} --model dcgan --width 1 "
           "--resolution 32 --batch 8 --kimg 0.032 --snap 0.016 --metrics none --no-progress --threads 1")
    script = (f"mount -t tmpfs -o size=3m tmpfs {out} && {{ {cmd}; echo rc1=$?; }}; "
              f"mount -o remount,size=256m {out} && {{ {cmd} --resume latest; echo rc2=$?; }}; "
              f"ls {out}/*/level_0/done.json")
    res = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    err = res.stderr
    assert "rc1=28" in res.stdout, (res.stdout, err[-2000:])
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "the disk is full" in lines[0] and "--resume latest" in lines[0]
    assert "Traceback" not in err
    assert "rc2=0" in res.stdout and "done.json" in res.stdout, (res.stdout, err[-2000:])
