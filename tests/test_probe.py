"""`degan train --dry-run --probe N`: predicted time from a short real training probe, leaving no run folder."""

from __future__ import annotations

import re

from click.testing import CliRunner

from degan.cli import main


def test_dry_run_probe_prints_a_prediction_and_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["train", "--data", "faces100", "--model", "dcgan", "--width", "0.125",
                                    "--batch", "8", "--kimg", "5", "--outdir", str(out), "--dry-run", "--probe", "3",
                                    "--metrics", "kid_train", "--num-gen", "100"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = re.search(r"# predicted: ([0-9.]+) s/kimg -> training 5 kimg ~([0-9.]+) min \+ evaluation of 200 images",
                  res.stdout)
    assert m, res.stdout
    sec_per_kimg, minutes = float(m.group(1)), float(m.group(2))
    assert sec_per_kimg > 0 and abs(minutes - sec_per_kimg * 5 / 60) < 0.06
    assert "3-iteration probe" in res.stdout
    assert not out.exists() or not any(out.iterdir())  # the probe ran in a throw-away folder


def test_probe_zero_skips_it(tmp_path):
    res = CliRunner().invoke(main, ["train", "--data", "faces100", "--model", "dcgan", "--outdir", str(tmp_path),
                                    "--dry-run", "--probe", "0"], catch_exceptions=False)
    assert res.exit_code == 0 and "predicted" not in res.stdout
