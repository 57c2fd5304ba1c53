"""The `degan` command end to end on tiny settings: dry runs, bad input, a 2-level IMP run, ticket training."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from degan.cli import main, parse_seeds
from degan.errors import DeganError

TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
        "--metrics", "none", "--no-progress", "--set", "train.log_kimg=0.016"]


def run(args, expect=0):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == expect, res.output
    return res.output


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for i in range(12):
        sub = d / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    return d


@pytest.mark.parametrize("cmd", ["train", "ticket", "demo"])
def test_dry_run_prints_config_and_writes_nothing(tmp_path, cmd):
    out = run([cmd, "--dry-run", "--outdir", tmp_path / "runs"])
    assert "total_kimg" in out and "# run folder" in out
    assert not (tmp_path / "runs").exists()


def test_help_shows_defaults():
    out = run(["train", "--help"])
    assert "--kimg" in out and "default" in out and "--subset" in out


def test_dry_run_applies_flags_and_sets():
    out = run(["ticket", "--dry-run", "--model", "sngan32", "--kimg", "7", "--subset", "0.1", "--levels", "4",
               "--set", "train.n_dis=3", "--augment", "diffaug:translation"])
    assert "name: sngan32" in out and "total_kimg: 7.0" in out and "n_dis: 3" in out and "levels: 4" in out
    assert "subset: '0.1'" in out and "augment: diffaug:translation" in out


@pytest.mark.parametrize("args,msg", [
    (["--set", "train.bogus=1"], "unknown config key"),
    (["--set", "prune.rate=1.5"], "prune.rate"),
    (["--model", "nope"], "unknown model"),
])
def test_bad_config_is_one_clear_line(tmp_path, args, msg):
    out = run(["ticket", "--outdir", tmp_path, "--data", "faces100", "--kimg", "0.016", *TINY, *args], expect=2)
    assert out.startswith("error:") and msg in out and "Traceback" not in out


def test_bad_data_errors(tmp_path, folder):
    out = run(["train", "--outdir", tmp_path / "r", "--data", tmp_path / "missing", *TINY], expect=2)
    assert "error:" in out and "missing" in out
    (tmp_path / "empty").mkdir()
    out = run(["train", "--outdir", tmp_path / "r", "--data", tmp_path / "empty", *TINY], expect=2)
    assert "error:" in out and "no images" in out.lower()
    out = run(["train", "--outdir", tmp_path / "r", "--data", folder, "--subset", "500", *TINY], expect=2)
    assert "error:" in out and "500" in out
    out = run(["train", "--outdir", tmp_path / "r", "--data", folder, "--subset", "-0.5", *TINY], expect=2)
    assert "error:" in out
    assert not any((tmp_path / "r").glob("*/level_0/done.json"))


def test_bad_files_are_listed_and_run_continues(tmp_path, folder):
    (folder / "a" / "zero.png").write_bytes(b"")
    (folder / "a" / "trunc.png").write_bytes((folder / "a" / "1.png").read_bytes()[:60])
    out = run(["train", "--outdir", tmp_path / "r", "--data", folder, "--kimg", "0.016", *TINY])
    run_dir = next((tmp_path / "r").iterdir())
    info = json.loads((run_dir / "data.json").read_text())
    skipped = " ".join(s["path"] for s in info["skipped"])
    assert "zero.png" in skipped and "trunc.png" in skipped
    assert "2 skipped" in out  # the run says so ...
    assert (run_dir / "level_0" / "done.json").is_file()  # ... and continues with the 12 good images
    assert json.loads((run_dir / "subset.json").read_text())["num_selected"] == 12


def test_imp_two_levels_then_train_ticket_generate_report(tmp_path, folder):
    outdir = tmp_path / "runs"
    run(["ticket", "--outdir", outdir, "--data", folder, "--levels", "2", "--kimg", "0.064", *TINY])
    (run_dir,) = [p for p in outdir.iterdir() if p.name.startswith("ticket-")]
    for k in range(3):
        done = json.loads((run_dir / f"level_{k}" / "done.json").read_text())
        assert done["density_G"] == pytest.approx(0.8 ** k, abs=2e-3)
        assert done["density_D"] == pytest.approx(0.8 ** k, abs=2e-3)
        assert done["real_images_shown"] == 64
        dens = json.loads((run_dir / f"level_{k}" / "density.json").read_text())
        assert set(dens["layers_G"]) and all(v["density"] <= 1 for v in dens["layers_G"].values())
        assert (run_dir / f"level_{k}" / "samples" / "fakes_latest.png").is_file()
    assert re.search(r"\| 2 \| 0\.6[34]\d\d \| 0\.6[34]\d\d \| 36\.0 %", (run_dir / "report.md").read_text())
    subset = json.loads((run_dir / "subset.json").read_text())
    assert subset["num_selected"] == 12
    # a re-run skips finished levels (no new checkpoints, same done.json)
    stamp = (run_dir / "level_1" / "done.json").stat().st_mtime_ns
    out = run(["ticket", "--outdir", outdir, "--data", folder, "--levels", "2", "--kimg", "0.064", *TINY])
    assert (run_dir / "level_1" / "done.json").stat().st_mtime_ns == stamp
    assert "report.md" in out

    # train the level-2 ticket with another augmentation; same mask, rewound to theta_0
    run(["train", "--outdir", outdir, "--data", folder, "--ticket", run_dir / "level_2", "--kimg", "0.032",
         "--augment", "diffaug:translation", *TINY])
    (train_dir,) = [p for p in outdir.iterdir() if p.name.startswith("train-")]
    done = json.loads((train_dir / "level_0" / "done.json").read_text())
    assert done["density_G"] == pytest.approx(0.64, abs=2e-3)
    from degan.lottery import load_masks

    m1, m2 = load_masks(run_dir / "level_2" / "masks.safetensors"), load_masks(train_dir / "level_0" / "masks.safetensors")
    for net in ("G", "D"):
        for k in m1[net]:
            assert torch.equal(m1[net][k], m2[net][k])

    # a ticket from another model is refused
    out = run(["train", "--outdir", outdir, "--data", folder, "--ticket", run_dir / "level_2", *TINY[:2],
               "--width", "1.0", *TINY[4:]], expect=2)
    assert "another model" in out

    out = run(["generate", run_dir, "--seeds", "0-7", "--grid", tmp_path / "g.png", "--images", tmp_path / "im"])
    assert Image.open(tmp_path / "g.png").size[0] > 16 and len(list((tmp_path / "im").glob("*.png"))) == 8
    assert "| level |" in run(["report", run_dir, "--dry-run"])


def test_resume_latest(tmp_path, folder):
    outdir = tmp_path / "runs"
    args = ["train", "--outdir", outdir, "--data", folder, *TINY]
    run([*args, "--kimg", "0.064"])
    (run_dir,) = list(outdir.iterdir())
    stage = run_dir / "level_0"
    # simulate an interruption: drop done.json and the final checkpoint
    (stage / "done.json").unlink()
    ckpts = sorted((stage / "checkpoints").glob("ckpt-*.pt"))
    ckpts[-1].unlink()
    out = run(args + ["--kimg", "0.064"], expect=2)
    assert "--resume latest" in out
    run(args + ["--kimg", "0.064", "--resume", "latest"])
    assert json.loads((stage / "done.json").read_text())["real_images_shown"] == 64


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(DeganError):
        parse_seeds("a-b")


def test_eval_with_real_inception_appends_protocol_records(tmp_path, folder, monkeypatch):
    monkeypatch.setenv("DEGAN_CACHE", str(tmp_path / "cache"))
    from degan.errors import DeganError as _E
    from degan.metrics import find_inception_weights

    try:
        find_inception_weights()
    except _E as e:
        pytest.skip(f"Inception weights absent: {e}")
    outdir = tmp_path / "runs"
    run(["train", "--outdir", outdir, "--data", folder, "--kimg", "0.016", *TINY])
    (run_dir,) = list(outdir.iterdir())
    out = run(["eval", run_dir / "level_0", "--dry-run"])
    assert "would evaluate" in out
    out = run(["eval", run_dir, "--metrics", "fid_train,kid_train", "--num-gen", "16", "--no-progress"])
    assert "fid16_train" in out and "kid16_train" in out
    recs = [json.loads(x) for x in (run_dir / "level_0" / "metrics.jsonl").read_text().splitlines()]
    fid = next(r for r in recs if r["metric"] == "fid16_train")
    assert fid["value"] > 0 and fid["protocol"]["num_real"] == 12 and fid["protocol"]["resize"] == "bilinear"
    assert "fid16_train" in (run_dir / "report.md").read_text()
    # the cached reference features are reused: a second eval does not add cache files
    cache_dir = Path(os.environ["DEGAN_CACHE"])
    cache = sorted(cache_dir.rglob("*.pt"))
    assert cache
    run(["eval", run_dir, "--metrics", "fid_train", "--num-gen", "16", "--no-progress"])
    assert sorted(cache_dir.rglob("*.pt")) == cache
    out = run(["eval", run_dir, "--metrics", "fid_bogus"], expect=2)
    assert "valid names" in out


def test_generate_and_report_on_unfinished_run_are_clear(tmp_path, folder):
    outdir = tmp_path / "runs"
    run(["train", "--outdir", outdir, "--data", folder, "--kimg", "0.016", *TINY])
    (run_dir,) = list(outdir.iterdir())
    (run_dir / "level_0" / "done.json").unlink()
    out = run(["generate", run_dir, "--seeds", "0-3"], expect=2)
    assert "no finished level" in out
    out = run(["generate", tmp_path, "--seeds", "0-3"], expect=2)
    assert "not a degan run folder" in out


@pytest.mark.slow  # real data from the shared folder
def test_ticket_on_shared_cifar10_subset(tmp_path, shared_data):
    npz = shared_data / "cifar10-subset" / "cifar10_prefix_subset.npz"
    outdir = tmp_path / "runs"
    run(["ticket", "--outdir", outdir, "--data", npz, "--subset", "0.1", "--balance", "--levels", "1",
         "--kimg", "0.032", *TINY])
    (run_dir,) = list(outdir.iterdir())
    subset = json.loads((run_dir / "subset.json").read_text())
    info = json.loads((run_dir / "data.json").read_text())
    assert subset["num_images"] == 5085 and subset["num_selected"] == 509
    assert set(info["class_counts_selected"]) == {50, 51}
    assert json.loads((run_dir / "level_1" / "done.json").read_text())["density_G"] == pytest.approx(0.8, abs=1e-3)


def test_advaug_from_the_cli(tmp_path, folder):
    outdir = tmp_path / "runs"
    out = run(["train", "--outdir", outdir, "--data", folder, "--advaug", "--set", "advaug.split_G=99", *TINY],
              expect=2)
    assert "out of range" in out and not outdir.exists()
    out = run(["train", "--outdir", outdir, "--data", folder, "--advaug", "--set", "advaug.steps=0", *TINY], expect=2)
    assert "steps must be >= 1" in out
    run(["train", "--outdir", outdir, "--data", folder, "--advaug", "--kimg", "0.032", *TINY])
    (run_dir,) = list(outdir.iterdir())
    stats = [json.loads(x) for x in (run_dir / "level_0" / "stats.jsonl").read_text().splitlines()]
    assert "loss_D_adv" in stats[-1] and "loss_G_adv" in stats[-1]


def test_help_lists_every_registered_model():
    from degan.models import list_models

    out = CliRunner().invoke(main, ["train", "--help"]).output
    flat = " ".join(out.split())
    assert len(list_models()) >= 4 and all(name in flat for name in list_models())


def test_name_gives_a_readable_run_folder_and_keeps_the_hash(tmp_path):
    base = ["train", "--data", "faces100", "--outdir", tmp_path, "--dry-run", "--threads", "1"]
    plain = CliRunner().invoke(main, [str(a) for a in base]).output.splitlines()[-1]
    named = CliRunner().invoke(main, [str(a) for a in base + ["--name", "My Emoji Run"]]).output.splitlines()[-1]
    via_set = CliRunner().invoke(main, [str(a) for a in base + ["--set", "name=my emoji run"]]).output.splitlines()[-1]
    assert plain.startswith("# run folder:") and "train-dcgan-faces100-" in plain
    assert named.endswith("train-my-emoji-run-" + plain[-8:]) and via_set == named  # same hash: a label only
