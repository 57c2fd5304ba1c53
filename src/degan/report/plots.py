"""Plots over runs: FID (or KID) vs remaining weights, as Figure 4 of the data-efficient ticket paper.

One curve per run over its levels (x = remaining weights of the pruned network in %, log scale, decreasing left to
right), branches (random tickets, random masks, fine-tuned, transferred, channel tickets) as distinct markers in
the run's colour, the dense baseline (level 0 of the first run) as a dashed horizontal line, error bars where the
metric has a std (KID). The data behind the plot is written as CSV.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..fileio import atomic_path

CSV_COLUMNS = ["run", "label", "stage", "level", "branch", "density_G", "density_D", "remaining_pct", "metric",
               "value", "std", "x_basis"]
"""Columns of the CSV written by :func:`fid_vs_density`. ``x_basis`` says what ``remaining_pct`` is:
``density_G`` / ``density_D`` (remaining weights), or ``flops_ratio`` (channel tickets: forward FLOPs of the compact
G over the dense G)."""

_BRANCH_MARKERS = {"random_ticket": "x", "random_mask": "^", "finetune": "s", "channel": "P"}
_OTHER_MARKERS = ["v", "*", "h", "<", ">", "p", "d"]


def _run_root(path: str | Path) -> Path:
    """A run folder from a user path (the run folder, or one of its stage folders).

    Raises:
        FileNotFoundError: not a degan run folder.
    """
    from ..lottery.layout import RunLayout, find_stage

    try:
        run, _ = find_stage(path)
        return run.root
    except FileNotFoundError:
        if RunLayout(Path(path)).stages():  # a run folder whose config.yaml is missing: still readable
            return Path(path)
        raise


def _variant_from_prune(prune: dict) -> str:
    """GAN-LTH name from a ``prune:`` config section (as ``degan.config.variant_name``, tolerant of missing keys)."""
    if prune.get("variant"):
        return str(prune["variant"])
    nets = "".join(n.strip() for n in str(prune.get("networks", "G,D")).split(",") if n.strip())
    method = str(prune.get("method", "imp_global"))
    base = {"imp_global": "IMP", "imp_layerwise": "IMP-layerwise", "omp": "OMP", "random": "random"}.get(method, method)
    name = f"{base}_{nets}"
    if float(prune.get("kd_weight") or 0) > 0:
        name += "_KD"
    rewind = str(prune.get("rewind", "init"))
    if rewind != "init":
        name += f"@{rewind}"
    return name


def run_label(run_root: str | Path, rows: list[dict] | None = None) -> str:
    """A legend label for a run: ``IMP_GD (imp_global, rho 0.2)``, ``dense``, ...

    The variant is the ``variant`` recorded in the levels' ``done.json`` when there is one, else derived from the
    ``prune:`` section of the run's ``config.yaml``; the pruning method and rate follow in parentheses for pruned
    runs. Falls back to the folder name when neither is readable.

    Args:
        run_root: the run folder.
        rows: the run's rows from :func:`degan.report.collect` (read when None).
    """
    from ..config import load_file
    from ..errors import ConfigError
    from .rows import collect

    root = Path(run_root)
    rows = collect(root) if rows is None else rows
    variant = next((r["variant"] for r in rows if r.get("variant") and not r.get("branch")), None)
    try:
        cfg = load_file(root / "config.yaml")
    except ConfigError:
        cfg = {}
    prune = cfg.get("prune") or {}
    pruned = int(prune.get("levels") or 0) > 0 or any(r["level"] > 0 for r in rows)
    if variant is None:
        if prune and pruned:
            variant = _variant_from_prune(prune)
        elif cfg.get("ticket"):
            variant = f"ticket {Path(str(cfg['ticket'])).parent.name}/{Path(str(cfg['ticket'])).name}"
        elif cfg:
            variant = "dense"
        else:
            return root.name
    if prune and pruned:
        return f"{variant} ({prune.get('method', 'imp_global')}, rho {float(prune.get('rate', 0.2)):g})"
    return variant


def _x_of(row: dict, network: str) -> tuple[float | None, str]:
    """Remaining-weights percentage of a finished row and what it is measured on."""
    if row.get("flops_ratio") is not None:
        return 100.0 * float(row["flops_ratio"]), "flops_ratio"
    key = f"density_{network}"
    v = row.get(key)
    return (None if v is None else 100.0 * float(v)), key


def _pick_metric(all_rows: list[list[dict]], metric: str | None, runs: list[Path]) -> str:
    names: list[str] = []
    for rows in all_rows:
        for r in rows:
            if r.get("status") != "done":
                continue
            for n, m in (r.get("metrics") or {}).items():
                if n not in names and (m or {}).get("value") is not None:
                    names.append(n)
    avail = ", ".join(names) or "none"
    if metric is not None:
        if metric not in names:
            raise ValueError(f"metric {metric!r} is in no finished stage of {', '.join(map(str, runs))}; "
                             f"available metrics: {avail}")
        return metric
    for prefix in ("fid", "kid"):
        found = [n for n in names if n.startswith(prefix)]
        if found:
            return found[0]
    raise ValueError(f"no FID or KID metric in the finished stages of {', '.join(map(str, runs))}; "
                     f"available metrics: {avail} (evaluate with `degan eval RUN_DIR`)")


def fid_vs_density_rows(runs: list[Path | str], metric: str | None = None, labels: list[str] | None = None,
                        network: str = "G") -> tuple[str, list[dict]]:
    """The data of :func:`fid_vs_density`: the chosen metric and one record per plotted stage.

    Args:
        runs: run folders (or stage folders inside them).
        metric: metric name (e.g. ``fid500_train``); None = the first ``fid*`` metric present, else ``kid*``.
        labels: one legend label per run; None = :func:`run_label`. Duplicate labels get the folder name appended.
        network: ``G`` or ``D``: whose remaining weights are the x axis.

    Returns:
        ``(metric, records)``; each record has the keys of :data:`CSV_COLUMNS` (``std`` None where absent).
        Stages that are unfinished, lack the metric or lack the density are left out.

    Raises:
        ValueError: no runs, a wrong number of labels, ``network`` not G/D, or the metric is absent in all runs
            (the message lists the available metrics).
        FileNotFoundError: a path that is not a degan run folder.
    """
    from .rows import collect

    if network not in ("G", "D"):
        raise ValueError(f"network must be 'G' or 'D', got {network!r}")
    if not runs:
        raise ValueError("fid_vs_density needs at least one run folder")
    roots = [_run_root(p) for p in runs]
    if labels is not None and len(labels) != len(roots):
        raise ValueError(f"got {len(labels)} labels for {len(roots)} runs; give one label per run")
    all_rows = [collect(r) for r in roots]
    metric = _pick_metric(all_rows, metric, roots)
    names = list(labels) if labels is not None else [run_label(r, rows) for r, rows in zip(roots, all_rows)]
    if labels is None:
        names = [f"{n} [{r.name}]" if names.count(n) > 1 else n for n, r in zip(names, roots)]

    records = []
    for root, label, rows in zip(roots, names, all_rows):
        for r in rows:
            m = (r.get("metrics") or {}).get(metric) or {}
            if r.get("status") != "done" or m.get("value") is None:
                continue
            x, basis = _x_of(r, network)
            if x is None or x <= 0:
                continue
            records.append({"run": str(root), "label": label, "stage": r["stage"], "level": r["level"],
                            "branch": r.get("branch"), "density_G": r.get("density_G"),
                            "density_D": r.get("density_D"), "remaining_pct": x, "metric": metric,
                            "value": float(m["value"]), "std": None if m.get("std") is None else float(m["std"]),
                            "x_basis": basis})
    return metric, records


def _pct_label(v: float) -> str:
    """``100``, ``80``, ``64``, ``51.2``, ``41``, ``32.8``..."""
    return f"{v:.3g}"


def _ticks(values: list[float], min_gap: float = 0.035) -> list[float]:
    """The distinct x values, thinned so that neighbouring ticks are at least ``min_gap`` decades apart."""
    distinct = sorted({round(v, 6) for v in values}, reverse=True)
    while True:
        kept: list[float] = []
        for v in distinct:
            if not kept or math.log10(kept[-1]) - math.log10(v) >= min_gap:
                kept.append(v)
        if len(kept) <= 14:
            return kept
        min_gap *= 1.5


def _marker(branch: str) -> str:
    if branch in _BRANCH_MARKERS:
        return _BRANCH_MARKERS[branch]
    if branch.startswith("transfer"):
        return "D"
    if branch.startswith("channel"):
        return "P"
    return _OTHER_MARKERS[sum(map(ord, branch)) % len(_OTHER_MARKERS)]


def _errorbar(ax, recs: list[dict], **kw) -> None:
    x = [r["remaining_pct"] for r in recs]
    y = [r["value"] for r in recs]
    yerr = [r["std"] or 0.0 for r in recs] if any(r["std"] is not None for r in recs) else None
    ax.errorbar(x, y, yerr=yerr, capsize=3 if yerr else 0, **kw)


def _write_csv(path: Path, records: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for r in records:
                w.writerow(["" if r[c] is None else r[c] for c in CSV_COLUMNS])


def fid_vs_density(runs: list[Path | str], out_png: str | Path, out_csv: str | Path | None = None,
                   metric: str | None = None, labels: list[str] | None = None, network: str = "G") -> Path:
    """Plot a metric (FID by default) vs the remaining weights of each run's levels and branches.

    x = remaining weights of ``network`` in % (``density_<network> * 100``; channel tickets, which record
    ``flops_ratio``, use the forward FLOPs of the compact G over the dense G, as the legend and the CSV's
    ``x_basis`` say), log scale, ticks at the actual densities, decreasing left to right. One curve per run over
    its levels; branches as distinct markers in the run's colour (random_ticket ``x``, random_mask triangles,
    finetune squares, transfer-* diamonds, channel ``P``); the dense baseline (level 0 of the first run that has
    one) as a dashed horizontal line; error bars where the metric has a std (KID).

    Args:
        runs: run folders (or stage folders inside them), compared in one plot.
        out_png: the PNG to write.
        out_csv: the CSV of the plotted data (columns :data:`CSV_COLUMNS`); None = beside ``out_png`` with the
            suffix ``.csv``.
        metric: metric name, e.g. ``fid500_train`` or ``kid500_train``; None = the first ``fid*`` metric present,
            else the first ``kid*``.
        labels: one legend label per run; None = :func:`run_label` (variant, pruning method and rate).
        network: ``G`` or ``D``: whose remaining weights are the x axis.

    Returns:
        The PNG path. Both files are written atomically.

    Raises:
        ValueError: the metric is absent in all runs (the message lists the available ones), no runs, a wrong
            number of labels, or ``network`` not G/D.
        FileNotFoundError: a path that is not a degan run folder.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    out_png = Path(out_png)
    out_csv = out_png.with_suffix(".csv") if out_csv is None else Path(out_csv)
    metric, records = fid_vs_density_rows(runs, metric=metric, labels=labels, network=network)
    if not records:
        raise ValueError(f"no finished stage of {', '.join(map(str, runs))} records both {metric} and "
                         f"density_{network}; nothing to plot")

    run_order = list(dict.fromkeys(r["run"] for r in records))
    n_entries = 1 + len({(r["run"], r["branch"] or "") for r in records})  # curves + branches + the baseline
    ncols = 1 if n_entries <= 3 else 2
    fig = Figure(figsize=(7.5, 4.4 + 0.2 * math.ceil(n_entries / ncols)), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    any_flops = False
    for i, run in enumerate(run_order):
        color = f"C{i % 10}"
        recs = [r for r in records if r["run"] == run]
        label = recs[0]["label"]
        levels = sorted((r for r in recs if not r["branch"]), key=lambda r: r["level"])
        if levels:
            _errorbar(ax, levels, fmt="-o", color=color, markersize=5, label=label)
        for branch in dict.fromkeys(r["branch"] for r in recs if r["branch"]):
            pts = sorted((r for r in recs if r["branch"] == branch), key=lambda r: r["level"])
            flops = any(r["x_basis"] == "flops_ratio" for r in pts)
            any_flops |= flops
            note = " (x = FLOPs ratio)" if flops else ""
            _errorbar(ax, pts, fmt=_marker(branch), linestyle=":" if len(pts) > 1 else "none", color=color,
                      markersize=7, markeredgewidth=1.5, label=f"{label} · {branch}{note}")

    base = next((r for run in run_order for r in records
                 if r["run"] == run and r["level"] == 0 and not r["branch"]), None)
    if base is not None:
        whose = "level 0" if len(run_order) == 1 else f"{base['label']}, level 0"
        ax.axhline(base["value"], color="0.35", linestyle="--", linewidth=1.2,
                   label=f"dense baseline ({whose}): {base['value']:.4g}")

    xs = [r["remaining_pct"] for r in records]
    ticks = _ticks(xs)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels([_pct_label(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = min(xs), max(xs)
    ax.set_xlim(hi * 1.12, lo / 1.12)  # inverted: dense on the left, sparser to the right
    xlabel = f"remaining weights of {network} (%, log scale)"
    if any_flops:
        xlabel += "; channel tickets: FLOPs of G (%)"
    ax.set_xlabel(xlabel)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs remaining weights")
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside lower center", ncols=ncols, fontsize="small", frameon=False)

    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    _write_csv(out_csv, records)
    return out_png


__all__ = ["fid_vs_density", "fid_vs_density_rows", "run_label", "CSV_COLUMNS"]
