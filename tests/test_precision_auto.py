"""`--precision auto` (degan.train.precision.auto_precision): bf16 only with bf16 units and a C5-validated family."""

from __future__ import annotations

from click.testing import CliRunner

from degan.cli import main
from degan.train import precision as P


def test_auto_needs_bf16_units_and_a_validated_family(monkeypatch):
    monkeypatch.setattr(P, "has_bf16_units", lambda device: True)
    assert P.auto_precision("dcgan", "cpu")[0] == "bf16"
    mode, why = P.auto_precision("stylegan2", "cpu")
    assert mode == "fp32" and "not yet compared" in why
    monkeypatch.setattr(P, "has_bf16_units", lambda device: False)
    mode, why = P.auto_precision("dcgan", "cpu")
    assert mode == "fp32" and "no bfloat16 units" in why


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for text, expected in (("flags\t: fpu avx512f avx512_bf16\n", True), ("flags\t: fpu avx2\n", False),
                           ("Features\t: fp asimd bf16\n", True)):
        f = tmp_path / "cpuinfo"
        f.write_text(text)
        monkeypatch.setattr(builtins, "open", lambda path, *a, **k: real_open(f if path == "/proc/cpuinfo" else path,
                                                                              *a, **k))
        assert P.has_bf16_units("cpu") is expected
    monkeypatch.setattr(builtins, "open", real_open)


def test_auto_run_records_the_resolved_precision(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(P, "has_bf16_units", lambda device: True)
    monkeypatch.setattr("degan.lottery.techniques._AUTO_SAID", set())  # said once per process: say it here
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, ["train", "--data", "faces100", "--model", "dcgan", "--width", "0.125",
                                    "--kimg", "0.064", "--batch", "8", "--metrics", "none", "--precision", "auto",
                                    "--outdir", str(out), "--no-progress"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "precision auto -> bf16" in res.output
    (run,) = out.iterdir()
    env = json.loads((run / "env.json").read_text())["repeat"]
    assert env["precision"] == "auto" and env["precision_resolved"] == "bf16"
