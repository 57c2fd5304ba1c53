"""Determinism: the same command on the same machine with the same thread count gives bit-identical weights,
masks, stats and metrics (docs/reproduce.md). Two fresh processes run the same short ``degan ticket`` (dense level
and one IMP level, DiffAugment, masks, G_ema, KID/FID with the real Inception when its weights are installed)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import have_inception, random_image_folder
from safetensors.torch import load_file

TIME_KEYS = ("timestamp", "wall_seconds", "sec_per_kimg", "train_seconds", "eval_seconds", "seconds")


def _strip(obj):
    """Drop wall-clock fields (they are the only ones allowed to differ)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not any(k.endswith(t) for t in TIME_KEYS)}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _jsonl(path):
    return [_strip(json.loads(x)) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture
def folder(tmp_path):
    return random_image_folder(tmp_path / "imgs", 16)


def _run(outdir, folder, cache, metrics):
    cmd = [sys.executable, "-m", "degan.cli", "ticket", "--data", str(folder), "--outdir", str(outdir),
           "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--kimg", "0.096",
           "--levels", "1", "--snap", "0.048", "--metrics", metrics, "--num-gen", "24", "--no-progress",
           "--set", "train.log_kimg=0.016", "--set", "eval.monitor_every_kimg=0.048"]
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2", DEGAN_CACHE=str(cache))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = [p for p in outdir.iterdir() if p.is_dir()]
    return run


def test_same_command_same_threads_is_bit_identical(tmp_path, folder):
    metrics = "kid_train,fid_train" if have_inception() else "none"
    a = _run(tmp_path / "a", folder, tmp_path / "cache", metrics)
    b = _run(tmp_path / "b", folder, tmp_path / "cache", metrics)  # second run reads the cached reference features
    assert a.name == b.name  # same config -> same run folder name
    env = json.loads((a / "env.json").read_text())
    assert env["repeat"]["torch_threads"] == 2 and env["repeat"]["world_size"] == 1
    assert (a / "init.pt").read_bytes() == (b / "init.pt").read_bytes() or all(
        torch.equal(x, y) for x, y in zip(torch.load(a / "init.pt", weights_only=True)["G"].values(),
                                          torch.load(b / "init.pt", weights_only=True)["G"].values()))
    for level in ("level_0", "level_1"):
        la, lb = a / level, b / level
        for name in ("G_ema.safetensors", "masks.safetensors"):
            ta, tb = load_file(la / name), load_file(lb / name)
            assert ta.keys() == tb.keys()
            for k in ta:
                assert torch.equal(ta[k], tb[k]), f"{level}/{name}:{k} differs"
        ca = sorted((la / "checkpoints").glob("ckpt-*.pt"))
        cb = sorted((lb / "checkpoints").glob("ckpt-*.pt"))
        assert [p.name for p in ca] == [p.name for p in cb] and ca
        sa = torch.load(ca[-1], weights_only=True)["state"]
        sb = torch.load(cb[-1], weights_only=True)["state"]
        for net in ("G", "D", "G_ema"):
            for k, v in sa[net].items():
                assert torch.equal(v, sb[net][k]), f"{level} checkpoint {net}.{k} differs"
        assert _jsonl(la / "stats.jsonl") == _jsonl(lb / "stats.jsonl")
        assert _jsonl(la / "monitor.jsonl") == _jsonl(lb / "monitor.jsonl")
        assert _strip(json.loads((la / "done.json").read_text())) == _strip(json.loads((lb / "done.json").read_text()))
        if metrics != "none":
            ma, mb = _jsonl(la / "metrics.jsonl"), _jsonl(lb / "metrics.jsonl")
            assert [m["metric"] for m in ma] == ["kid24_train", "fid24_train"]
            assert ma == mb  # values bit-identical (compared as the same floats in JSON)


def _train(outdir, folder, seed):
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    res = subprocess.run([sys.executable, "-m", "degan.cli", "train", "--data", str(folder), "--outdir", str(outdir),
                          "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--kimg",
                          "0.048", "--metrics", "none", "--no-progress", "--seed", str(seed)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = [p for p in outdir.iterdir() if p.is_dir()]
    return load_file(run / "level_0" / "G_ema.safetensors")


def test_another_seed_differs(tmp_path, folder):
    """The check above can fail: another training seed gives other weights."""
    ga, gb = _train(tmp_path / "a", folder, 0), _train(tmp_path / "b", folder, 1)
    assert ga.keys() == gb.keys()
    assert any(not torch.equal(ga[k], gb[k]) for k in ga)


def test_threads_option_is_applied_and_recorded(tmp_path, folder):
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    res = subprocess.run([sys.executable, "-m", "degan.cli", "train", "--data", str(folder), "--outdir",
                          str(tmp_path / "r"), "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch",
                          "8", "--kimg", "0.016", "--metrics", "none", "--no-progress", "--threads", "1"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = [p for p in (tmp_path / "r").iterdir() if p.is_dir()]
    rep = json.loads((run / "env.json").read_text())["repeat"]
    assert rep["torch_threads"] == 1 and rep["env"]["OMP_NUM_THREADS"] == "1"
