"""Run reports: a Markdown table over levels (density G/D, FID, KID, #RI, wall time) with the sample grids."""

from __future__ import annotations

import os
from pathlib import Path

from ..fileio import read_json, read_jsonl, write_text


def collect(run_root: str | Path) -> list[dict]:
    """One row per level folder of a run: ``done.json`` merged with the latest value of each metric."""
    from ..lottery.layout import RunLayout

    rows = []
    for stage in RunLayout(Path(run_root)).levels():
        if not stage.done.is_file():
            rows.append({"level": stage.level, "status": "unfinished", "dir": stage.root})
            continue
        row = dict(read_json(stage.done), status="done", dir=stage.root)
        metrics = dict(row.get("metrics") or {})
        for rec in read_jsonl(stage.metrics):  # later evaluations (degan eval) add to or override these
            metrics[rec["metric"]] = {"value": rec["value"], "std": rec.get("std"), "protocol": rec.get("protocol")}
        row["metrics"] = metrics
        rows.append(row)
    return rows


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
    return f"{m} min {s:02d} s"


def table(rows: list[dict]) -> tuple[str, list[str]]:
    """Markdown table of ``rows`` and the metric names used as columns."""
    names: list[str] = []
    for r in rows:
        for n in r.get("metrics", {}) or {}:
            if n not in names:
                names.append(n)
    fids = [n for n in names if n.startswith("fid")]
    kids = [n for n in names if n.startswith("kid")]
    others = [n for n in names if n not in fids and n not in kids]
    cols = fids + kids + others
    head = ["level", "density G", "density D", "sparsity G", *cols, "#RI", "kimg", "train time", "eval time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("status") != "done":
            lines.append(f"| {r['level']} | unfinished |" + " |" * (len(head) - 2))
            continue
        cells = [str(r["level"]), f"{r['density_G']:.4f}", f"{r['density_D']:.4f}", f"{100 * (1 - r['density_G']):.1f} %"]
        cells += [_fmt_metric(r["metrics"].get(c)) for c in cols]
        cells += [f"{r['real_images_shown']:,}", f"{r['kimg']:.1f}", _hms(r.get("train_seconds")),
                  _hms(r.get("eval_seconds"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), cols


def write_report(run_root: str | Path) -> Path:
    """Write ``report.md`` in the run folder and return its path."""
    from ..lottery.layout import RunLayout

    run = RunLayout(Path(run_root))
    rows = collect(run.root)
    text, cols = table(rows)
    protocol = None
    for r in rows:
        for m in (r.get("metrics") or {}).values():
            protocol = protocol or m.get("protocol")
    first = next((r for r in rows if r.get("status") == "done"), None)
    out = [f"# degan report: {run.root.name}", "",
           "Config: [config.yaml](config.yaml) · data: [data.json](data.json) · environment: [env.json](env.json)", "",
           text, "",
           "#RI = real images shown to D. Train time = wall time of the training loop (incl. snapshots); "
           "eval time = generating and scoring the evaluation samples. Metrics are computed on G_ema."]
    if protocol:
        out += ["", "Metric protocol: " + ", ".join(f"{k} = {v}" for k, v in protocol.items() if v is not None)]
    out += ["", "## Samples (G_ema, fixed latents)", ""]
    if first is not None and (Path(first["dir"]) / "samples" / "reals.png").is_file():
        rel = os.path.relpath(Path(first["dir"]) / "samples", run.root)
        out += [f"Real training images: ![reals]({rel}/reals.png)", ""]
        if (Path(first["dir"]) / "samples" / "reals_aug.png").is_file():
            out += [f"The same reals after the augmentation D sees: ![reals_aug]({rel}/reals_aug.png)", ""]
    for r in rows:
        grid = Path(r["dir"]) / "samples" / "fakes_latest.png"
        if r.get("status") == "done" and grid.is_file():
            rel = os.path.relpath(grid, run.root)
            out += [f"### level {r['level']} (density G {r['density_G']:.3f})", "", f"![level {r['level']}]({rel})", ""]
    path = run.report
    write_text(path, "\n".join(out) + "\n")
    return path
