"""Ctrl-C / SIGTERM during training write a checkpoint of that moment; --resume latest continues bit-identically."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

ARGS = ["train", "--data", "faces100", "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8",
        "--kimg", "1.6", "--snap", "100", "--metrics", "none", "--no-progress", "--threads", "1",
        "--set", "train.log_kimg=0.04", "--set", "eval.monitor_every_kimg=null"]


def degan(outdir, *extra):
    return [sys.executable, "-m", "degan.cli", *ARGS, "--outdir", str(outdir), *extra]


def stats(root):
    drop = ("sec_per_kimg", "wall_seconds", "timestamp")
    lines = next(root.glob("*/level_0/stats.jsonl")).read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k not in drop} for ln in lines]


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name != "posix", reason="POSIX signals")
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_writes_a_checkpoint_of_that_moment_and_the_resume_is_bit_identical(tmp_path, sig, code):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = subprocess.run(degan(tmp_path / "ref"), capture_output=True, text=True, env=env, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "cut"
    proc = subprocess.Popen(degan(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline:  # training has started: the first stats record exists
        found = list(out.glob("*/level_0/stats.jsonl"))
        if found and found[0].read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-2000:]
    line = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "--resume latest" in line[0] and "Traceback" not in err
    ckpt_dir = next(out.glob("*/level_0/checkpoints"))
    ckpts = sorted(ckpt_dir.glob("ckpt-*.pt"))
    assert len(ckpts) == 2 and ckpts[-1].name in line[0]  # the kimg-0 one and the one of the interrupt
    saved = torch.load(ckpts[-1], weights_only=True)["state"]
    assert 0 < saved["cur_nimg"] < 1600 and (ckpt_dir / ckpts[-1].with_suffix(".interrupt").name).is_file()

    res = subprocess.run(degan(out, "--resume", "latest"), capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    a = load_file(str(next((tmp_path / "ref").glob("*/level_0/G_ema.safetensors"))))
    b = load_file(str(next(out.glob("*/level_0/G_ema.safetensors"))))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert stats(out) == stats(tmp_path / "ref")  # every record once, with the uninterrupted values
    assert not list(ckpt_dir.glob("*.interrupt")) and not (ckpt_dir / ckpts[-1].name).exists()  # temporary


def test_an_interrupt_at_a_periodic_checkpoint_keeps_it_periodic(tmp_path):
    """A stop requested in the iteration that wrote a periodic checkpoint reuses it (no marker), so the next
    periodic checkpoint does not delete it (found by the kill battery under SIGTERM)."""
    from test_memory import toy_trainer

    from degan.train.callbacks import Snapshot

    tr = toy_trainer()
    snap = Snapshot(tmp_path / "ck", tmp_path / "samples", 0.016, {}, torch.randn(4, 8), keep=10)
    tr.state.cur_nimg = 16
    snap.snapshot(tr)                       # periodic, at 16
    snap.snapshot(tr, periodic=False)       # the interrupt in the same iteration
    assert not list((tmp_path / "ck").glob("*.interrupt"))
    tr.state.cur_nimg = 24
    snap.snapshot(tr, periodic=False)       # an interrupt between two periodic checkpoints: temporary
    assert [p.name for p in (tmp_path / "ck").glob("*.interrupt")] == ["ckpt-000000024.interrupt"]
    tr.state.cur_nimg = 32
    snap.snapshot(tr)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["ckpt-000000016.pt", "ckpt-000000032.pt"]
