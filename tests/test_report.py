"""Reports over fake run folders: the table over levels and branches, the FID-vs-density plot and its CSV."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from degan.config import RunConfig, dump_yaml, replace
from degan.report import collect, fid_vs_density, table, write_report
from degan.report.summary import format_flops, search_compute

FID = "fid500_train"
KID = "kid500_train"


def _write_config(root: Path, levels=3, rate=0.2, networks="G,D"):
    cfg = RunConfig()
    cfg = replace(cfg, prune=replace(cfg.prune, levels=levels, rate=rate, networks=networks))
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(dump_yaml(cfg))


def _stage(root: Path, name: str, level: int, density: float, fid=None, kid=None, extra=None, jsonl=None):
    d = root / name
    d.mkdir(parents=True)
    metrics = {}
    if fid is not None:
        metrics[FID] = {"value": fid, "std": None}
    if kid is not None:
        metrics[KID] = {"value": kid[0], "std": kid[1]}
    done = {"level": level, "density_G": density, "density_D": density, "sparsity_G": 1 - density,
            "sparsity_D": 1 - density, "kimg": 120.0, "step": 3750, "real_images_shown": 120000,
            "train_seconds": 380.2, "eval_seconds": 60.1, "metrics": metrics, **(extra or {})}
    (d / "done.json").write_text(json.dumps(done))
    if jsonl:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in jsonl))
    return d


def _costs(density):
    return {"train_flops_dense": 1.2e15, "train_flops_effective": 1.2e15 * density, "effective_ratio": density,
            "convention": "test"}


FIDS = [90.0, 80.0, 85.0, 100.0]


def make_run(root: Path, fids=FIDS, rate=0.2, variant=None) -> Path:
    """level_0..level_3 (rate 0.2), a branch level_2_random_ticket and an unfinished level_4."""
    _write_config(root, levels=4, rate=rate)
    for k, fid in enumerate(fids):
        extra = {"costs": _costs((1 - rate) ** k)} if k != 1 else {}  # level 1 has no costs recorded
        if variant:
            extra["variant"] = variant
        # level 3's FID is overridden by a later evaluation in metrics.jsonl
        jsonl = [{"metric": FID, "value": fid, "std": None}] if k == 3 else None
        _stage(root, f"level_{k}", k, (1 - rate) ** k, fid=fid if k != 3 else 999.0,
               kid=(0.05 + 0.01 * k, 0.004), extra=extra, jsonl=jsonl)
    _stage(root, "level_2_random_ticket", 2, (1 - rate) ** 2, fid=120.0, kid=(0.09, 0.006),
           extra={"branch": "random_ticket", "variant": "random"})
    (root / "level_4").mkdir()  # unfinished
    return root


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_collect_and_table_cover_levels_and_branches(tmp_path):
    run = make_run(tmp_path / "run")
    rows = collect(run)
    assert [r["stage"] for r in rows] == ["level_0", "level_1", "level_2", "level_2_random_ticket", "level_3",
                                          "level_4"]
    assert rows[3]["level"] == 2 and rows[3]["branch"] == "random_ticket" and rows[3]["variant"] == "random"
    assert rows[2]["branch"] is None and rows[5]["status"] == "unfinished"
    assert rows[4]["metrics"][FID]["value"] == FIDS[3]  # metrics.jsonl overrides done.json

    text, cols = table(rows)
    assert cols == [FID, KID]
    lines = text.splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[:4] == ["level", "density G", "density D", "sparsity G"]
    assert {"#RI", "train FLOPs (dense)", "train FLOPs (effective)", "wall time", "stage"} <= set(head)
    body = {line.rsplit("|", 2)[-2].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[2:]}
    assert set(body) == {r["stage"] for r in rows}  # every stage and branch has a row
    assert body["level_2_random_ticket"][0] == "2 ↳ random_ticket"
    lv2 = dict(zip(head, body["level_2"]))
    assert lv2["level"] == "2" and lv2["density G"] == "0.6400" and lv2["sparsity G"] == "36.0 %"
    assert lv2[FID] == "85.00" and lv2[KID] == "0.0700 ± 0.0040" and lv2["#RI"] == "120,000"
    assert lv2["train FLOPs (dense)"] == "1.2 PFLOP" and lv2["train FLOPs (effective)"] == "768 TFLOP (64 %)"
    assert lv2["wall time"] == "7 min 20 s"
    lv1 = dict(zip(head, body["level_1"]))
    assert lv1["train FLOPs (dense)"] == "-" and lv1["train FLOPs (effective)"] == "-"  # no costs recorded
    lv4 = dict(zip(head, body["level_4"]))
    assert lv4["density G"] == "unfinished" and lv4[FID] == "-"


def test_search_compute_sums_levels_and_skips_branches(tmp_path):
    """Levels 0..3 of make_run: #RI accumulates 120k per level; level 1 has no FLOPs, so the sum is unknown from
    there on; the branch is not part of any search; the unfinished level 4 ends the list."""
    run = make_run(tmp_path / "run")
    found = search_compute(collect(run))
    assert [f["level"] for f in found] == [0, 1, 2, 3]
    assert [f["real_images_shown"] for f in found] == [120_000, 240_000, 360_000, 480_000]
    assert found[0]["train_flops"] == pytest.approx(1.2e15) and found[1]["train_flops"] is None
    assert found[2]["train_flops"] is None and found[3]["train_flops"] is None
    one = make_run(tmp_path / "one")  # with level 1's costs the sums are exact
    (one / "level_1" / "done.json").write_text(json.dumps({**json.loads((one / "level_1" / "done.json").read_text()),
                                                           "costs": _costs(0.8)}))
    sums = [f["train_flops"] for f in search_compute(collect(one))]
    assert sums == pytest.approx([1.2e15 * sum(0.8 ** j for j in range(k + 1)) for k in range(4)])
    text = write_report(one).read_text()
    assert "## Search compute" in text and "| 3 | 480,000 |" in text


def test_format_flops():
    assert format_flops(1.2e15) == "1.2 PFLOP"
    assert format_flops(3.4e14) == "340 TFLOP"
    assert format_flops(2.5e9) == "2.5 GFLOP"
    assert format_flops(12) == "12 FLOP"
    assert format_flops(None) == "-"


def test_plot_and_csv(tmp_path):
    run = make_run(tmp_path / "run")
    png = fid_vs_density([run], tmp_path / "out" / "fid.png", tmp_path / "out" / "fid.csv")
    assert png == tmp_path / "out" / "fid.png"
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # not blank

    rows = _read_csv(tmp_path / "out" / "fid.csv")
    assert list(rows[0]) == ["run", "label", "stage", "level", "branch", "density_G", "density_D",
                             "remaining_pct", "metric", "value", "std", "x_basis"]
    by_stage = {r["stage"]: r for r in rows}
    assert set(by_stage) == {"level_0", "level_1", "level_2", "level_2_random_ticket", "level_3"}  # not level_4
    for k, fid in enumerate(FIDS):
        r = by_stage[f"level_{k}"]
        assert float(r["value"]) == fid and r["metric"] == FID and r["std"] == "" and r["branch"] == ""
        assert float(r["density_G"]) == pytest.approx(0.8 ** k)
        assert float(r["remaining_pct"]) == pytest.approx(100 * 0.8 ** k)
    assert by_stage["level_2_random_ticket"]["branch"] == "random_ticket"
    assert float(by_stage["level_2_random_ticket"]["value"]) == 120.0
    assert {r["label"] for r in rows} == {"IMP_GD (imp_global, rho 0.2)"}

    # KID: std in the CSV (error bars); D's densities on the x axis
    fid_vs_density([run], tmp_path / "kid.png", metric=KID, network="D")
    kid = {r["stage"]: r for r in _read_csv(tmp_path / "kid.csv")}  # default CSV beside the PNG
    assert float(kid["level_1"]["value"]) == pytest.approx(0.06) and float(kid["level_1"]["std"]) == 0.004
    assert kid["level_1"]["x_basis"] == "density_D"


def test_channel_branch_uses_flops_ratio(tmp_path):
    run = make_run(tmp_path / "run")
    _stage(run, "level_1_channel", 1, 1.0, fid=95.0, extra={"branch": "channel", "flops_ratio": 0.35})
    fid_vs_density([run], tmp_path / "p.png")
    ch = next(r for r in _read_csv(tmp_path / "p.csv") if r["stage"] == "level_1_channel")
    assert float(ch["remaining_pct"]) == pytest.approx(35.0) and ch["x_basis"] == "flops_ratio"


def test_compare_two_runs(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", fids=[90.0, 70.0, 75.0, 88.0], rate=0.4, variant="IMP_GD_KD")
    fid_vs_density([a, b], tmp_path / "cmp.png", tmp_path / "cmp.csv")
    rows = _read_csv(tmp_path / "cmp.csv")
    assert {r["label"] for r in rows} == {"IMP_GD (imp_global, rho 0.2)", "IMP_GD_KD (imp_global, rho 0.4)"}
    b1 = next(r for r in rows if r["run"] == str(b) and r["stage"] == "level_1")
    assert float(b1["value"]) == 70.0 and float(b1["remaining_pct"]) == pytest.approx(60.0)
    # given labels; identical derived labels are told apart by the folder name
    fid_vs_density([a, b], tmp_path / "c2.png", labels=["mine", "theirs"])
    assert {r["label"] for r in _read_csv(tmp_path / "c2.csv")} == {"mine", "theirs"}
    c = make_run(tmp_path / "c")
    fid_vs_density([a, c], tmp_path / "c3.png")
    assert {r["label"] for r in _read_csv(tmp_path / "c3.csv")} == {"IMP_GD (imp_global, rho 0.2) [a]",
                                                                    "IMP_GD (imp_global, rho 0.2) [c]"}
    with pytest.raises(ValueError, match="2 labels for 1 runs"):
        fid_vs_density([a], tmp_path / "x.png", labels=["x", "y"])


def test_unknown_metric_lists_available(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(ValueError, match=r"fid50k_full.*available metrics: fid500_train, kid500_train"):
        fid_vs_density([run], tmp_path / "x.png", metric="fid50k_full")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.csv").exists()
    with pytest.raises(FileNotFoundError, match="not a degan run folder"):
        fid_vs_density([tmp_path / "nowhere"], tmp_path / "x.png")


def test_write_report_with_plot(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "level_0" / "samples").mkdir()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(run / "level_0" / "samples" / "fakes_latest.png")
    (run / "level_2_random_ticket" / "samples").mkdir()
    Image.new("RGB", (8, 8), (0, 255, 0)).save(run / "level_2_random_ticket" / "samples" / "fakes_latest.png")
    path = write_report(run)
    assert path == run / "report.md"
    text = path.read_text()
    assert "| 2 ↳ random_ticket |" in text and "| 4 | unfinished |" in text
    assert "![fid500_train vs remaining weights of G](fid_vs_density.png)" in text
    assert "](level_0/samples/fakes_latest.png)" in text
    assert "### level 2 · random_ticket" in text
    assert (run / "fid_vs_density.png").is_file()
    assert len(_read_csv(run / "fid_vs_density.csv")) == 5


def test_write_report_without_metrics(tmp_path):
    run = tmp_path / "run"
    _write_config(run, levels=1)
    _stage(run, "level_0", 0, 1.0)
    _stage(run, "level_1", 1, 0.8)
    text = write_report(run).read_text()
    assert "| 1 | 0.8000 | 0.8000 | 20.0 % |" in text
    assert "vs remaining weights" not in text
    assert not (run / "fid_vs_density.png").exists() and not (run / "fid_vs_density.csv").exists()
    with pytest.raises(ValueError, match="no FID or KID metric.*available metrics: none"):
        fid_vs_density([run], tmp_path / "x.png")


def test_cyclegan_run_folder_reports_levels_densities_metrics_and_translations(tmp_path):
    """A CycleGAN run folder (done.json as degan.cyclegan.run writes it) in the shared report: densities of the
    generators and discriminators, the metrics of both directions, #RI from both domains, translation grids."""
    from degan.cyclegan import CycleGANConfig, dump_yaml as dump_cycle
    from degan.report.html import write_html_report
    from degan.report.rows import run_kind

    run = tmp_path / "cyclegan-run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_cycle(CycleGANConfig()))
    for k, dens in ((0, 1.0), (1, 0.8)):
        d = run / f"level_{k}"
        (d / "samples").mkdir(parents=True)
        Image.new("RGB", (8, 8), (0, 0, 255)).save(d / "samples" / "translate_latest.png")
        done = {"level": k, "density_G_AB": dens, "density_G_BA": dens, "density_D_A": 1.0, "density_D_B": 1.0,
                "density_G": dens, "density_D": 1.0, "kimg": 0.5, "step": 125, "images_shown_per_domain": 500,
                "train_seconds": 12.0, "pruned_networks": ["G_AB", "G_BA"], "variant": "IMP_G", "eval_seconds": 1.0,
                "metrics": {"fid8_A2B_train": {"value": 40.0 + k, "std": None},
                            "kid8_B2A_train": {"value": 0.01, "std": 0.001}}}
        (d / "done.json").write_text(json.dumps(done))
    assert run_kind(run) == "cyclegan" and run_kind(tmp_path) == "gan"
    rows = collect(run)
    assert [r["real_images_shown"] for r in rows] == [1000, 1000]
    text = write_report(run).read_text()
    assert "| 1 | 0.8000 | 1.0000 | 20.0 % | 41.00 | 0.0100 ± 0.0010 | 1,000 |" in text
    assert "](level_1/samples/translate_latest.png)" in text and "G_AB(A) against domain B" in text
    assert "G_ema" not in text and (run / "fid_vs_density.png").is_file()
    html = write_html_report(run).read_text()
    assert "Final translation grids" in html and "A CycleGAN run" in html
