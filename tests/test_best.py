"""When to stop: the best G_ema by a fixed-sample metric, early stopping, and both across a resume."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

import degan.lottery.best as best
from degan.cli import main

TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--kimg", "0.16", "--snap",
        "0.032", "--metrics", "none", "--no-progress", "--threads", "1", "--set", "eval.monitor_every_kimg=null"]


def fake_metric(values):
    """Replace the evaluation by a scripted sequence of values (one per check)."""
    it = iter(values)
    return lambda self, G_ema: next(it)


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert res.exit_code == expect, res.output
    return res.output


def test_best_snapshot_keeps_the_lowest_and_early_stop_ends_the_stage(tmp_path, monkeypatch):
    # checks every 0.032 kimg = 4 iterations of 8: values 5, 3, 4, 4 -> best at the 2nd, stop after 2 without a new best
    seen = []
    values = iter([5.0, 3.0, 4.0, 4.0, 9.0])

    def evaluate(self, G_ema):
        seen.append({k: v.clone() for k, v in G_ema.state_dict().items()})
        return next(values)

    monkeypatch.setattr(best.BestSnapshot, "_evaluate", evaluate)
    out = run(["train", "--data", "faces100", "--outdir", tmp_path, *TINY, "--best-every", "0.032",
               "--early-stop", "2"])
    assert "(new best)" in out and "early stop (--early-stop 2)" in out
    stage = next(tmp_path.glob("*/level_0"))
    info = json.loads((stage / "best.json").read_text())
    assert [h["kid500_train"] for h in info["history"]] == [5.0, 3.0, 4.0, 4.0]
    assert info["best"]["kimg"] == pytest.approx(0.064) and info["early_stopped_at_kimg"] == pytest.approx(0.128)
    done = json.loads((stage / "done.json").read_text())
    assert done["real_images_shown"] == 128 and done["early_stopped_at_kimg"] == pytest.approx(0.128)
    assert done["best"] == {"metric": "kid500_train", "value": 3.0, "kimg": pytest.approx(0.064),
                            "file": "G_ema_best.safetensors"}
    # the best file is G_ema as it was at the 2nd check (kimg 0.064), not the last one
    saved = load_file(str(stage / "G_ema_best.safetensors"))
    assert len(seen) == 4 and saved.keys() == seen[1].keys()
    assert all(torch.equal(saved[k], seen[1][k]) for k in saved)
    assert not all(torch.equal(saved[k], seen[3][k]) for k in saved)
    report = (stage.parent / "report.md").read_text()
    assert "## Best snapshot" in report and "| level_0 | kid500_train 3 | 0.1 | 0.1 |" in report
    G = best.load_best_generator(stage)
    assert G(torch.randn(2, G.z_dim)).shape == (2, 3, 16, 16)


def test_the_check_leaves_training_bit_identical(tmp_path, monkeypatch):
    monkeypatch.setattr(best.BestSnapshot, "_evaluate", fake_metric([1.0] * 10))
    run(["train", "--data", "faces100", "--outdir", tmp_path / "a", *TINY, "--best-every", "0.032"])
    run(["train", "--data", "faces100", "--outdir", tmp_path / "b", *TINY])
    a = load_file(str(next((tmp_path / "a").glob("*/level_0/G_ema.safetensors"))))
    b = load_file(str(next((tmp_path / "b").glob("*/level_0/G_ema.safetensors"))))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stop_needs_the_check(tmp_path):
    out = run(["train", "--data", "faces100", "--outdir", tmp_path, *TINY, "--early-stop", "2"], expect=2)
    assert "needs the best-snapshot check" in out and "--best-every" in out


def test_a_stage_resumed_after_the_stop_was_decided_stops_again(tmp_path):
    state = best.BestState()
    state.load_state_dict({"history": [{"cur_nimg": 64}], "best": None, "since_best": 3, "stopped_at_nimg": 64})

    class T:
        total_nimg = 1000

        class state:  # noqa: N801
            cur_nimg = 64

    cb = best.BestSnapshot.__new__(best.BestSnapshot)
    cb.state, cb.every_nimg = state, 32
    t = T()
    cb.on_train_start(t)
    assert t.total_nimg == 64


def test_a_real_check_with_a_small_kid(tmp_path):
    out = run(["train", "--data", "faces100", "--outdir", tmp_path, *TINY, "--best-every", "0.16",
               "--set", "eval.best_metric=kid32_train"])
    stage = next(tmp_path.glob("*/level_0"))
    info = json.loads((stage / "best.json").read_text())
    assert len(info["history"]) == 1 and info["best"]["kid32_train"] == info["history"][0]["kid32_train"]
    assert "kid32_train" in out and (stage / "G_ema_best.safetensors").is_file()
