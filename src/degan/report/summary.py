"""Run reports: a Markdown table over levels and branches (density G/D, FID, KID, #RI, training FLOPs, wall time),
the plot FID vs remaining weights with the data behind it as CSV, and the sample grids."""

from __future__ import annotations

import os
from pathlib import Path

from ..fileio import write_text
from .rows import collect, run_kind

PLOT_PNG = "fid_vs_density.png"
"""File name of the metric-vs-remaining-weights plot :func:`write_report` writes in the run folder."""
PLOT_CSV = "fid_vs_density.csv"
"""File name of the data behind :data:`PLOT_PNG`."""


def metric_names(rows: list[dict]) -> list[str]:
    """Metric names of ``rows`` ordered FIDs, KIDs, then the others (each group by first appearance)."""
    names: list[str] = []
    for r in rows:
        for n in r.get("metrics") or {}:
            if n not in names:
                names.append(n)
    fids = [n for n in names if n.startswith("fid")]
    kids = [n for n in names if n.startswith("kid")]
    return fids + kids + [n for n in names if n not in fids and n not in kids]


def _fmt_metric(m: dict | None) -> str:
    if not m:
        return "-"
    v, s = m.get("value"), m.get("std")
    if v is None:
        return "-"
    if s is not None:
        return f"{v:.4f} ± {s:.4f}"
    return f"{v:.2f}"


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m >= 60:
        h, m = divmod(m, 60)
        return f"{h} h {m:02d} min"
    return f"{m} min {s:02d} s"


_FLOP_UNITS = [(1e21, "ZFLOP"), (1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"),
               (1e6, "MFLOP"), (1e3, "kFLOP")]


def format_flops(flops: float | None) -> str:
    """A FLOP count in human units with 3 significant digits: ``1.2e15`` -> ``1.2 PFLOP``; None -> ``-``."""
    if flops is None:
        return "-"
    flops = float(flops)
    for scale, unit in _FLOP_UNITS:
        if abs(flops) >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.3g} FLOP"


def _fmt_density(r: dict, key: str) -> str:
    v = r.get(key)
    return "-" if v is None else f"{v:.4f}"


def _stage_label(r: dict) -> str:
    """``2`` for a level, ``2 ↳ random_ticket`` for a branch of level 2."""
    return str(r["level"]) if not r.get("branch") else f"{r['level']} ↳ {r['branch']}"


def _costs_cells(r: dict) -> list[str]:
    costs = r.get("costs") or {}
    dense, eff = costs.get("train_flops_dense"), costs.get("train_flops_effective")
    ratio = costs.get("effective_ratio")
    if ratio is None and dense and eff is not None:
        ratio = eff / dense
    eff_cell = format_flops(eff)
    if eff is not None and ratio is not None:
        eff_cell += f" ({100 * ratio:.3g} %)"
    return [format_flops(dense), eff_cell]


def _wall(r: dict) -> str:
    train, ev = r.get("train_seconds"), r.get("eval_seconds")
    if train is None and ev is None:
        return "-"
    return _hms((train or 0.0) + (ev or 0.0))


def table(rows: list[dict]) -> tuple[str, list[str]]:
    """Markdown table of ``rows`` (from :func:`collect`) and the metric names used as columns.

    Columns: level (``2``; a branch reads ``2 ↳ random_ticket``), density G (channel tickets add their forward-FLOPs
    ratio of G), density D, sparsity G, one column
    per metric (FIDs, KIDs, others), #RI, training FLOPs dense and effective (with the effective/dense ratio), wall
    time (train + eval), the variant (when any row has one) and the stage folder. Absent values show ``-``;
    unfinished stages say so.
    """
    cols = metric_names(rows)
    show_variant = any(r.get("variant") for r in rows)
    head = ["level", "density G", "density D", "sparsity G", *cols, "#RI", "train FLOPs (dense)",
            "train FLOPs (effective)", "wall time", *(["variant"] if show_variant else []), "stage"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("status") != "done":
            cells = [_stage_label(r), "unfinished"] + ["-"] * (len(head) - 3) + [r["stage"]]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        dg = r.get("density_G")
        ri = r.get("real_images_shown")
        dens_g = _fmt_density(r, "density_G")
        if r.get("flops_ratio") is not None:  # channel tickets: fewer channels, dense weights
            dens_g += f" (FLOPs {100 * r['flops_ratio']:.3g} %)"
        cells = [_stage_label(r), dens_g, _fmt_density(r, "density_D"),
                 "-" if dg is None else f"{100 * (1 - dg):.1f} %"]
        cells += [_fmt_metric(r["metrics"].get(c)) for c in cols]
        cells += ["-" if ri is None else f"{ri:,}", *_costs_cells(r), _wall(r)]
        if show_variant:
            cells.append(r.get("variant") or "-")
        cells.append(r["stage"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), cols


def search_compute(rows: list[dict]) -> list[dict]:
    """The compute of the ticket search up to each level: #RI and effective training FLOPs summed over the levels
    0..k that the level-k ticket needed (branches, which no later level needs, are left out).

    Returns:
        ``[{"level": k, "real_images_shown": int, "train_flops": float | None}, ...]`` for the finished levels in
        order, stopping at the first unfinished one (a later level's search is not complete without it); empty for a
        run with a single level.
    """
    levels = sorted((r for r in rows if not r.get("branch")), key=lambda r: r.get("level") or 0)
    out, ri, flops = [], 0, 0.0
    for r in levels:
        if r.get("status") != "done":
            break
        ri += int(r.get("real_images_shown") or 0)
        eff = (r.get("costs") or {}).get("train_flops_effective")
        flops = None if flops is None or eff is None else flops + float(eff)
        out.append({"level": r.get("level"), "real_images_shown": ri, "train_flops": flops})
    return out if len(out) > 1 else []


def _search_lines(rows: list[dict]) -> list[str]:
    found = search_compute(rows)
    if not found:
        return []
    lines = ["", "## Search compute", "",
             "What the ticket at each level cost, its own training included: #RI and effective training FLOPs summed "
             "over levels 0..k "
             "(early-bird levels count up to their draw).", "",
             "| level | #RI (levels 0..k) | train FLOPs (effective, levels 0..k) |", "|---|---|---|"]
    lines += [f"| {f['level']} | {f['real_images_shown']:,} | {format_flops(f['train_flops'])} |" for f in found]
    return lines


def _plot_network(run_root: Path) -> str:
    """``D`` when the run's config prunes D only, else ``G``."""
    from ..config import load_file
    from ..errors import ConfigError

    try:
        prune = load_file(Path(run_root) / "config.yaml").get("prune") or {}
    except ConfigError:
        return "G"
    nets = {n.strip() for n in str(prune.get("networks", "G,D")).split(",") if n.strip()}
    return "D" if nets == {"D"} else "G"


def _sample_grids(root: Path, rows: list[dict], first: dict | None) -> list[str]:
    """Markdown lines: the real images and the final G_ema samples of every finished stage."""
    out = ["", "## Samples (G_ema, fixed latents)", ""]
    if first is not None and (Path(first["dir"]) / "samples" / "reals.png").is_file():
        rel = os.path.relpath(Path(first["dir"]) / "samples", root)
        out += [f"Real training images: ![reals]({rel}/reals.png)", ""]
        if (Path(first["dir"]) / "samples" / "reals_aug.png").is_file():
            out += [f"The same reals after the augmentation D sees: ![reals_aug]({rel}/reals_aug.png)", ""]
    for r in rows:
        grid = Path(r["dir"]) / "samples" / "fakes_latest.png"
        if r.get("status") == "done" and grid.is_file():
            rel = os.path.relpath(grid, root)
            name = f"level {r['level']}" + (f" · {r['branch']}" if r.get("branch") else "")
            dens = "" if r.get("density_G") is None else f" (density G {r['density_G']:.3f})"
            out += [f"### {name}{dens}", "", f"![{name}]({rel})", ""]
    return out


def _translation_grids(root: Path, rows: list[dict]) -> list[str]:
    """Markdown lines: the final translation grid of every finished CycleGAN stage (:mod:`degan.cyclegan.grid`)."""
    out = ["", "## Translations (fixed images of both domains)", "",
           "Rows of each grid: A, G_AB(A), G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)).", ""]
    for r in rows:
        grid = Path(r["dir"]) / "samples" / "translate_latest.png"
        if r.get("status") == "done" and grid.is_file():
            name = f"level {r['level']}" + (f" · {r['branch']}" if r.get("branch") else "")
            dens = "" if r.get("density_G") is None else f" (density G {r['density_G']:.3f})"
            out += [f"### {name}{dens}", "", f"![{name}]({os.path.relpath(grid, root)})", ""]
    return out


def write_report(run_root: str | Path) -> Path:
    """Write ``report.md`` in the run folder and return its path.

    CycleGAN run folders (:func:`degan.report.rows.run_kind`) show their translation grids instead of G_ema samples.
    When a finished stage has a FID or KID metric, the plot of that metric vs the remaining weights
    (:data:`PLOT_PNG`) and its data (:data:`PLOT_CSV`) are written beside it and linked from the report.
    """
    from ..lottery.layout import RunLayout
    from .plots import fid_vs_density

    run = RunLayout(Path(run_root))
    rows = collect(run.root)
    text, cols = table(rows)
    protocol = None
    for r in rows:
        for m in (r.get("metrics") or {}).values():
            protocol = protocol or m.get("protocol")
    first = next((r for r in rows if r.get("status") == "done"), None)
    cyclegan = run_kind(run.root) == "cyclegan"
    evaluated = ("Metrics are computed on the trained generators: A2B = G_AB(A) against domain B, B2A = G_BA(B) "
                 "against domain A." if cyclegan else "Metrics are computed on G_ema.")
    out = [f"# degan report: {run.root.name}", "",
           "Config: [config.yaml](config.yaml) · data: [data.json](data.json) · environment: [env.json](env.json)", "",
           text, "",
           ("`2 ↳ <branch>` = a branch trained from level 2's result (folder `level_2_<branch>`). "
            if any(r.get("branch") for r in rows) else "") +
           "#RI = real images shown to D. Training FLOPs: dense = the same schedule with dense networks, effective = "
           "counting only the unpruned weights (the percentage is effective / dense). Wall time = training loop "
           "(incl. snapshots) + evaluation (generating and scoring the samples). " + evaluated]
    out += _search_lines(rows)
    if protocol:
        out += ["", "Metric protocol: " + ", ".join(f"{k} = {v}" for k, v in protocol.items() if v is not None)]

    plotted = [c for c in cols if c.startswith(("fid", "kid"))]
    if any(r.get("status") == "done" and r["metrics"].get(c, {}).get("value") is not None
           for r in rows for c in plotted):
        network = _plot_network(run.root)
        fid_vs_density([run.root], run.root / PLOT_PNG, run.root / PLOT_CSV, network=network)
        out += ["", f"## {plotted[0]} vs remaining weights", "",
                f"![{plotted[0]} vs remaining weights of {network}]({PLOT_PNG})", "",
                f"Data: [{PLOT_CSV}]({PLOT_CSV}). x = remaining weights of {network} (log scale; channel tickets: "
                "forward FLOPs of the compact G / dense G); the dashed line is the dense level 0."]

    for r in rows:  # RG-GAN runs: density per layer over time (Figure 3 of the paper) and FID with regenerations
        log = Path(r["dir"]) / "dynamic.jsonl"
        if not log.is_file():
            continue
        from .dynamic import fid_rows, plot_density, plot_fid_regen

        stage_dir = Path(r["dir"])
        png, csv_path = plot_density(log, stage_dir / "dynamic_density.png")
        rel = os.path.relpath(stage_dir, run.root)
        out += ["", f"## RG-GAN dynamic pruning ({stage_dir.name})", "",
                f"![density per layer over time]({rel}/{png.name})", "",
                f"Density of every masked layer of G and D over training (black: the whole network; shaded: dense "
                f"phases after augmented regeneration). Data: [{csv_path.name}]({rel}/{csv_path.name})."]
        if fid_rows(log):
            png, csv_path = plot_fid_regen(log, stage_dir / "dynamic_fid.png")
            out += ["", f"![trigger metric over time]({rel}/{png.name})", "",
                    f"The regeneration trigger's metric over training with its moving average; red lines = "
                    f"regeneration (all pruned weights back), green = pruning resumed. Data: "
                    f"[{csv_path.name}]({rel}/{csv_path.name})."]

    best_rows = [r for r in rows if r.get("status") == "done" and r.get("best")]
    if best_rows:  # --best-every: the best G_ema by the fixed-sample check, and early stopping (degan.lottery.best)
        out += ["", "## Best snapshot", "", "| stage | best | at kimg | stopped early at kimg | file |",
                "|---|---:|---:|---:|---|"]
        for r in best_rows:
            b, name = r["best"], Path(r["dir"]).name
            stop = r.get("early_stopped_at_kimg")
            out.append(f"| {name} | {b['metric']} {b['value']:.4g} | {b['kimg']:.1f} | "
                       f"{'-' if stop is None else f'{stop:.1f}'} | [{b['file']}]({name}/{b['file']}) |")
        out += ["", "The check every `--best-every` kimg on fixed latents keeps the best G_ema "
                "(history in each stage's `best.json`); the table above is the last G_ema."]

    if cyclegan:
        out += _translation_grids(run.root, rows)
    else:
        out += _sample_grids(run.root, rows, first)
    path = run.report
    write_text(path, "\n".join(out) + "\n")
    return path
