"""Plots of RG-GAN runs from the JSONL log of :class:`degan.train.regen.DynamicPruning`, each with its CSV.

- :func:`plot_density`: density (kept fraction of the masked weights) per layer over kimg, G and D in two panels,
  as Figure 3 (a, b) of Saxena et al., *RG-GAN*, AAAI 2024; dense phases of augmented regeneration are shaded.
- :func:`plot_fid_regen`: FID over kimg with the trigger's average and the regeneration / resume events marked.

Matplotlib is used through its object API with the Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import DataError
from ..fileio import atomic_path, read_jsonl, write_text

__all__ = ["dense_intervals", "density_rows", "fid_rows", "plot_density", "plot_fid_regen"]

NETS = ("G", "D")


def _records(jsonl_path: str | Path, kind: str) -> list[dict]:
    path = Path(jsonl_path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; it is written by DynamicPruning(log_path=...) during training")
    return [r for r in read_jsonl(path) if r.get("kind") == kind]


def density_rows(jsonl_path: str | Path) -> list[dict]:
    """Long-format rows ``{kimg, cur_nimg, phase, net, layer, density}`` of every density record (layer
    ``"overall"`` = the whole network), in log order."""
    rows = []
    for r in _records(jsonl_path, "density"):
        for net in NETS:
            d = r.get(net)
            if not d or not d.get("layers"):
                continue
            base = {"kimg": r["kimg"], "cur_nimg": r["cur_nimg"], "phase": r.get("phase", "sparse"), "net": net}
            rows.append({**base, "layer": "overall", "density": d["density"]})
            rows += [{**base, "layer": name, "density": v} for name, v in d["layers"].items()]
    return rows


def fid_rows(jsonl_path: str | Path) -> list[dict]:
    """Rows ``{kimg, cur_nimg, fid, average, phase, decision}`` of every FID evaluation, in log order."""
    return [{"kimg": r["kimg"], "cur_nimg": r["cur_nimg"], "fid": r["fid"], "average": r.get("average"),
             "phase": r.get("phase"), "decision": r.get("decision"), "metric": r.get("metric", "fid")}
            for r in _records(jsonl_path, "fid")]


def metric_label(metric: str) -> str:
    """Axis label of a regeneration metric: ``fid`` -> ``FID``, ``kid_train`` -> ``KID (train)``."""
    kind, _, split = str(metric).partition("_")
    return kind.upper() + (f" ({split})" if split else "")


def dense_intervals(jsonl_path: str | Path, end_kimg: float | None = None) -> list[tuple[float, float]]:
    """``[(start_kimg, end_kimg)]`` of the dense phases, from the regenerate / resume_pruning events; a phase still
    open at the end of the log ends at ``end_kimg`` (default: the last kimg in the log)."""
    records = read_jsonl(jsonl_path)
    last = end_kimg if end_kimg is not None else max((r.get("kimg", 0.0) for r in records), default=0.0)
    out, start = [], None
    for r in records:
        if r.get("kind") != "event":
            continue
        if r.get("event") == "regenerate" and start is None:
            start = r["kimg"]
        elif r.get("event") == "resume_pruning" and start is not None:
            out.append((start, r["kimg"]))
            start = None
    if start is not None:
        out.append((start, max(last, start)))
    return out


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    write_text(path, buf.getvalue())


def _save(fig, out_png: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_density(jsonl_path: str | Path, out_png: str | Path) -> tuple[Path, Path]:
    """Density per layer over kimg for G (left) and D (right), with the network's overall density in black and
    the dense phases shaded; writes ``out_png`` and the CSV beside it (same name, ``.csv``).

    Density = kept fraction of a layer's masked weights in [0, 1] (1.0 during a dense phase, when every weight is
    used); kimg = thousands of real images shown to D.

    Args:
        jsonl_path: the ``DynamicPruning`` log.
        out_png: the PNG to write (folders are created).

    Returns:
        ``(png_path, csv_path)``.

    Raises:
        DataError: the log is missing or has no density records (``log_kimg`` unset and training not started).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    cmap = colormaps["viridis"]
    out_png = Path(out_png)
    rows = density_rows(jsonl_path)
    if not rows:
        raise DataError(f"{jsonl_path} has no density records; train with DynamicPruning(log_path=..., log_kimg=...)")
    csv_path = out_png.with_suffix(".csv")
    _write_csv(csv_path, rows, ["kimg", "cur_nimg", "phase", "net", "layer", "density"])
    spans = dense_intervals(jsonl_path)
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, net in zip(axes, NETS):
        net_rows = [r for r in rows if r["net"] == net]
        layers = list(dict.fromkeys(r["layer"] for r in net_rows if r["layer"] != "overall"))
        for i, layer in enumerate(layers):
            pts = [(r["kimg"], r["density"]) for r in net_rows if r["layer"] == layer]
            label = layer.removesuffix(".weight")
            ax.plot(*zip(*pts), color=cmap(i / max(1, len(layers) - 1)), lw=1.2, label=label)
        overall = [(r["kimg"], r["density"]) for r in net_rows if r["layer"] == "overall"]
        if overall:
            ax.plot(*zip(*overall), color="black", lw=2.2, label="overall")
        for a, b in spans:
            ax.axvspan(a, b, color="tab:red", alpha=0.12, lw=0)
        ax.set_title(f"{net}: density per layer" + (" (shaded: dense phase)" if spans else ""))
        ax.set_xlabel("kimg (real images shown to D / 1000)")
        ax.grid(alpha=0.3)
        if layers or overall:
            ax.legend(fontsize=6, ncol=2 if len(layers) > 8 else 1, loc="best")
        else:
            ax.text(0.5, 0.5, f"{net} has no dynamic masks", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("density (kept fraction)")
    axes[0].set_ylim(-0.02, 1.02)
    _save(fig, out_png)
    return out_png, csv_path


def plot_fid_regen(jsonl_path: str | Path, out_png: str | Path) -> tuple[Path, Path]:
    """FID over kimg with the trigger's average (dashed), regenerate events (red lines), resume_pruning events
    (green lines) and the dense phases shaded; writes ``out_png`` and the CSV beside it (``.csv``).

    Args:
        jsonl_path: the ``DynamicPruning`` log.
        out_png: the PNG to write.

    Returns:
        ``(png_path, csv_path)``.

    Raises:
        DataError: the log is missing or holds no FID evaluations (augmented regeneration was off).
    """
    from matplotlib.figure import Figure

    out_png = Path(out_png)
    rows = fid_rows(jsonl_path)
    if not rows:
        raise DataError(f"{jsonl_path} has no FID records; augmented regeneration (regen_every_kimg) was off")
    csv_path = out_png.with_suffix(".csv")
    _write_csv(csv_path, rows, ["kimg", "cur_nimg", "fid", "average", "phase", "decision", "metric"])
    label = metric_label(rows[-1]["metric"])  # what the checks measured (the "fid" key holds any metric's value)
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    ax.plot([r["kimg"] for r in rows], [r["fid"] for r in rows], "o-", color="tab:blue", ms=3, label=label)
    avg = [(r["kimg"], r["average"]) for r in rows if r["average"] is not None]
    if avg:
        ax.plot(*zip(*avg), "--", color="tab:gray", lw=1, label="trigger average")
    for a, b in dense_intervals(jsonl_path, end_kimg=rows[-1]["kimg"]):
        ax.axvspan(a, b, color="tab:red", alpha=0.12, lw=0)
    for r in rows:
        if r["decision"] in ("regenerate", "resume_pruning"):
            color = "tab:red" if r["decision"] == "regenerate" else "tab:green"
            ax.axvline(r["kimg"], color=color, lw=1, alpha=0.8)
    n_regen = sum(r["decision"] == "regenerate" for r in rows)
    ax.plot([], [], color="tab:red", lw=1, label=f"regenerate ({n_regen})")
    ax.plot([], [], color="tab:green", lw=1, label="resume pruning")
    ax.set_xlabel("kimg (real images shown to D / 1000)")
    ax.set_ylabel(f"{label} (lower is better)")
    ax.set_title(f"{label} and augmented regeneration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, out_png)
    return out_png, csv_path
