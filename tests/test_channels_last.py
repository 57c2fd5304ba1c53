"""train.channels_last: auto (CUDA only), true, false; resolved per device, recorded in env.json, and a CPU run with
it on really trains channels-last."""

import json

import pytest
import torch
from click.testing import CliRunner

from degan.cli import main
from degan.config import ConfigError, RunConfig, TrainConfig, set_dotted


def test_auto_is_on_for_cuda_only_and_explicit_values_win():
    t = TrainConfig()
    assert t.channels_last == "auto"
    assert t.channels_last_on("cuda") and t.channels_last_on(torch.device("cuda", 1))
    assert not t.channels_last_on("cpu") and not t.channels_last_on(torch.device("cpu"))
    cfg = set_dotted(RunConfig(), "train.channels_last", "true")  # YAML true -> "True"
    assert cfg.train.channels_last_on("cpu")
    cfg = set_dotted(RunConfig(), "train.channels_last", "false")
    assert not cfg.train.channels_last_on("cuda")
    with pytest.raises(ConfigError, match="train.channels_last must be auto, true or false"):
        set_dotted(RunConfig(), "train.channels_last", "sometimes")


def test_a_cpu_run_with_channels_last_on_trains_nhwc_and_records_it(tmp_path, monkeypatch):
    from degan.train import precision

    seen = {}
    real = precision.apply_speed_options

    def spy(state, **kw):
        real(state, **kw)
        seen["on"] = kw["channels_last"]
        seen["nhwc"] = all(p.is_contiguous(memory_format=torch.channels_last)
                           for p in state.G.parameters() if p.dim() == 4)

    monkeypatch.setattr("degan.lottery.stage.apply_speed_options", spy)
    for value, want in (("true", True), ("auto", False)):
        out = tmp_path / value
        res = CliRunner().invoke(main, ["train", "--data", "faces100", "--outdir", str(out), "--model", "dcgan",
                                        "--width", "0.25", "--resolution", "16", "--batch", "4", "--kimg", "0.008",
                                        "--metrics", "none", "--no-progress", "--set", f"train.channels_last={value}"])
        assert res.exit_code == 0, res.output
        assert seen["on"] is want and seen["nhwc"] is want
        env = json.loads(next(out.glob("train-*/env.json")).read_text())
        assert env["repeat"]["channels_last"] in (value, value.capitalize())
        assert env["repeat"]["channels_last_resolved"] is want
