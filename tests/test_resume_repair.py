"""Resuming repairs what a fault left: stale temporary files are removed and the append-only logs are cut back to
the checkpoint, so that every step appears exactly once and the logs equal those of an uninterrupted run."""

import json

from click.testing import CliRunner
from conftest import random_image_folder

from degan.cli import main
from degan.fileio import remove_stale_temps, truncate_jsonl

TIME_KEYS = ("timestamp", "wall_seconds", "sec_per_kimg")


def test_remove_stale_temps_and_truncate_jsonl(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / "checkpoints" / ".ckpt-000048.pt.k2j3h4.tmp", tmp_path / ".G_ema.safetensors.x1.tmp",
             tmp_path / ".tmpab12cd"]
    keep = [tmp_path / "checkpoints" / "ckpt-000048.pt", tmp_path / ".hidden", tmp_path / "notes.tmp"]
    for p in stale + keep:
        p.write_text("x")
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)

    log = tmp_path / "stats.jsonl"
    log.write_text('{"cur_nimg": 16}\n{"cur_nimg": 32}\n{"cur_nimg": 48}\n{"cur_ni')  # torn last line
    assert truncate_jsonl(log, lambda r: r["cur_nimg"] <= 32) == 2
    assert [json.loads(x)["cur_nimg"] for x in log.read_text().splitlines()] == [16, 32]
    assert truncate_jsonl(tmp_path / "missing.jsonl", lambda r: False) == 0


def _records(path):
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append({k: v for k, v in json.loads(line).items() if k not in TIME_KEYS})
        except json.JSONDecodeError:
            out.append({"torn": line})
    return out


def test_resume_after_a_kill_keeps_every_step_once(tmp_path):
    d = random_image_folder(tmp_path / "imgs", 12)
    args = ["train", "--data", str(d), "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8",
            "--kimg", "0.096", "--snap", "0.048", "--metrics", "none", "--no-progress",
            "--set", "train.log_kimg=0.016", "--set", "eval.monitor_every_kimg=0.032"]

    def run(outdir, *extra):
        res = CliRunner().invoke(main, [*args, "--outdir", str(outdir), *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        (folder,) = [p for p in outdir.iterdir() if p.is_dir()]
        return folder / "level_0", res.output

    ref, _ = run(tmp_path / "a")
    stage, _ = run(tmp_path / "b")
    # what a kill after the checkpoint at 48 images (during the second half) leaves: no final checkpoint, no
    # done.json, log lines written after the checkpoint, temporary files of interrupted writes
    for name in ("done.json", "G_ema.safetensors"):
        (stage / name).unlink()
    (final,) = [p for p in (stage / "checkpoints").glob("ckpt-*.pt") if p.name.endswith("96.pt")]
    final.unlink()
    (stage / "checkpoints" / f".{final.name}.abc123.tmp").write_bytes(b"partial")
    (stage / ".G_ema.safetensors.q9.tmp").write_bytes(b"partial")
    with open(stage / "stats.jsonl", "a") as f:
        f.write('{"kimg": 0.1, "cur_ni')  # a torn line
    assert len(_records(stage / "stats.jsonl")) > len([r for r in _records(ref / "stats.jsonl")
                                                        if r["cur_nimg"] <= 48])

    stage, out = run(tmp_path / "b", "--resume", "latest")
    assert "repaired what an interruption left" in out and "2 temporary file(s) removed" in out
    assert not list(stage.rglob("*.tmp"))
    assert _records(stage / "stats.jsonl") == _records(ref / "stats.jsonl")
    assert _records(stage / "monitor.jsonl") == _records(ref / "monitor.jsonl")
    steps = [r["step"] for r in _records(stage / "stats.jsonl")]
    assert steps == sorted(set(steps))


def test_resume_after_a_kill_in_the_evaluation_repeats_no_monitor_record(tmp_path):
    """A kill after the final checkpoint (during G_ema writing or the evaluation) resumes from that checkpoint: the
    final records of stats.jsonl and monitor.jsonl were written before it and are not written again."""
    d = random_image_folder(tmp_path / "imgs", 12)
    args = ["train", "--data", str(d), "--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8",
            "--kimg", "0.056", "--snap", "0.016", "--metrics", "none", "--no-progress",
            "--set", "train.log_kimg=0.016", "--set", "eval.monitor_every_kimg=0.016"]

    def run(outdir, *extra):
        res = CliRunner().invoke(main, [*args, "--outdir", str(outdir), *extra], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        (folder,) = [p for p in outdir.iterdir() if p.is_dir()]
        return folder, res.output

    ref, _ = run(tmp_path / "a")
    run_b, _ = run(tmp_path / "b")
    stage = run_b / "level_0"
    for name in ("done.json", "G_ema.safetensors", "generator.json", "report.md"):  # killed after the checkpoint
        (run_b / "level_0" / name if name != "report.md" else run_b / name).unlink()
    (run_b / ".report.md.x1y2z3.tmp").write_text("partial")  # and a cut-off write in the run folder itself
    run_b, out = run(tmp_path / "b", "--resume", "latest")
    assert "1 temporary file(s) of an interrupted write removed" in out
    assert not list(run_b.rglob("*.tmp"))
    for log in ("stats.jsonl", "monitor.jsonl"):
        assert _records(stage / log) == _records(ref / "level_0" / log), log
    assert [r["cur_nimg"] for r in _records(stage / "monitor.jsonl")] == [0, 16, 32, 48, 56]


def test_config_and_env_describe_the_last_command_that_trained(tmp_path):
    """A command that fails, or finds the stage finished, leaves config.yaml and env.json as they were."""
    tiny = ["train", "--data", "faces100", "--outdir", str(tmp_path), "--model", "dcgan", "--width", "0.25",
            "--resolution", "16", "--batch", "8", "--kimg", "0.032", "--snap", "0.016", "--metrics", "none",
            "--no-progress", "--set", "eval.monitor_every_kimg=null"]
    res = CliRunner().invoke(main, [*tiny, "--threads", "1"])
    assert res.exit_code == 0, res.output
    run = next(tmp_path.glob("train-*"))
    before = {n: (run / n).read_bytes() for n in ("config.yaml", "env.json")}
    assert json.loads(before["env.json"])["torch_threads"] == 1

    res = CliRunner().invoke(main, [*tiny, "--threads", "2", "--set", "eval.num_gen=50"])  # finished: skipped
    assert res.exit_code == 0 and "already finished" in res.output
    assert {n: (run / n).read_bytes() for n in before} == before

    (run / "level_0" / "done.json").unlink()  # an unfinished training that the next command refuses to touch
    res = CliRunner().invoke(main, [*tiny, "--threads", "2", "--set", "eval.num_gen=50"])
    assert res.exit_code != 0 and "unfinished training" in res.output
    assert {n: (run / n).read_bytes() for n in before} == before

    res = CliRunner().invoke(main, [*tiny, "--threads", "2", "--set", "eval.num_gen=50", "--resume", "latest"])
    assert res.exit_code == 0, res.output
    env = json.loads((run / "env.json").read_text())
    assert env["torch_threads"] == 2
    assert "num_gen: 50" in (run / "config.yaml").read_text()
