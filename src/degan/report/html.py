"""One self-contained HTML page per run, readable at a glance (``degan report RUN_DIR`` writes ``report.html``).

The page holds: summary cards, warnings (D memorising, samples copying the training set or collapsing,
augmentation leaks, unfinished stages), the table over levels and branches with costs (#RI, training FLOPs, wall
time), the FID-vs-remaining-weights plot, the final samples of every stage; per stage: loss / logit / r_t curves
from ``stats.jsonl``, metrics over kimg from ``metrics.jsonl`` (when evaluated more than once), the D overfitting
monitor (``monitor.jsonl``), RG-GAN density plots, ADA's p, the nearest-training-neighbour pairs, and the sample grids over time; last, a config summary (the settings
that differ from the defaults; the whole ``config.yaml`` folded).

Every image lives in ``report_files/`` beside the page and is referenced relatively, so the output folder can be
copied or zipped as it is; nothing is fetched from outside, and there is no JavaScript. The run folder is only read:
with ``out_dir`` elsewhere, a read-only run can be reported. Plain string formatting with :func:`html.escape`
(no template engine).
"""

from __future__ import annotations

import datetime as _dt
import html
import re
import shutil
from pathlib import Path

from ..fileio import atomic_path, read_json, read_jsonl, write_text
from .rows import run_kind

__all__ = ["write_html_report", "ASSETS_DIR", "plot_training_curves", "plot_metric_curves"]

ASSETS_DIR = "report_files"
"""Folder beside ``report.html`` that holds its images."""

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;background:#f6f7f9;
color:#1d2330;line-height:1.45}
main{max-width:1240px;margin:0 auto;padding:20px 28px 60px}
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.8em;border-bottom:2px solid #d8dde6;padding-bottom:4px}
h3{margin:1.2em 0 .4em}
.sub{color:#5a6375;font-size:.92em}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #d8dde6;border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:1.25em}.card span{color:#5a6375;font-size:.82em}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:8px 0}
th,td{border:1px solid #d8dde6;padding:4px 7px;text-align:right;white-space:nowrap}
th{background:#eef1f6;white-space:normal}
.scroll{overflow-x:auto;max-width:100%}td.l,th.l{text-align:left}
tr.unfinished td{color:#8a93a5;font-style:italic}
.warn{background:#fff4e5;border-left:5px solid #e8590c;padding:8px 14px;margin:8px 0;border-radius:4px}
.ok{background:#ebfbee;border-left:5px solid #2f9e44;padding:8px 14px;margin:8px 0;border-radius:4px}
figure{margin:6px 12px 12px 0;display:inline-block;vertical-align:top;background:#fff;border:1px solid #d8dde6;
border-radius:6px;padding:6px}
figure img{display:block;max-width:100%}
figcaption{font-size:.8em;color:#5a6375;margin-top:4px;max-width:560px}
img.grid{image-rendering:pixelated;width:210px;height:auto}
figure .strip figure{border:none;padding:2px;margin:2px}
img.plot{width:560px;max-width:100%;height:auto}
img.wide{width:900px;max-width:100%;height:auto}
.strip{display:flex;flex-wrap:wrap;gap:0}
section.stage{background:#fff;border:1px solid #d8dde6;border-radius:10px;padding:4px 18px 12px;margin:18px 0}
section.stage figure{border-color:#e6e9ef}
pre{background:#fff;border:1px solid #d8dde6;padding:10px;overflow:auto;font-size:.82em}
details summary{cursor:pointer;color:#1c5cc4}
code{background:#eef1f6;padding:0 3px;border-radius:3px}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


# ---------------------------------------------------------------------------------------------------------------------
# plots of the JSONL logs


_CURVE_PANELS = [
    ("losses", [("loss_D", "loss D"), ("loss_G", "loss G")]),
    ("D output on (augmented) training batches", [("D_real", "D(real)"), ("D_fake", "D(fake)")]),
    ("r_t = E[sign D(real)] and ADA p", [("r_t", "r_t"), ("ada_p", "ADA p")]),
]


def plot_training_curves(stats_path: str | Path, out_png: str | Path, title: str | None = None) -> Path | None:
    """Losses, D's mean outputs, r_t (and ADA's p) over kimg from a ``stats.jsonl``; None when it has no rows.

    Returns:
        ``out_png`` (written atomically), or None (nothing written).
    """
    from matplotlib.figure import Figure

    rows = [r for r in read_jsonl(stats_path) if "kimg" in r]
    panels = [(t, [(k, lbl) for k, lbl in keys if any(r.get(k) is not None for r in rows)]) for t, keys in _CURVE_PANELS]
    panels = [p for p in panels if p[1]]
    if not rows or not panels:
        return None
    fig = Figure(figsize=(4.0 * len(panels), 3.1), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (panel_title, keys) in zip(axes, panels):
        for i, (k, label) in enumerate(keys):
            pts = [(r["kimg"], r[k]) for r in rows if r.get(k) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}", linewidth=1.2, label=label)
        ax.set_title(panel_title, fontsize="medium")
        ax.set_xlabel("kimg")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return out_png


def plot_metric_curves(stages: list[tuple[str, Path]], out_png: str | Path) -> Path | None:
    """Each metric over kimg for every stage whose ``metrics.jsonl`` has it at two or more kimg; None otherwise.

    Args:
        stages: ``(label, metrics.jsonl path)`` pairs.
        out_png: the PNG.
    """
    from matplotlib.figure import Figure

    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for label, path in stages:
        for r in read_jsonl(path):
            if r.get("metric") is None or r.get("kimg") is None or r.get("value") is None:
                continue
            series.setdefault(r["metric"], {}).setdefault(label, []).append((float(r["kimg"]), float(r["value"])))
    series = {m: {s: sorted(dict(p).items()) for s, p in by.items() if len(dict(p)) >= 2} for m, by in series.items()}
    series = {m: by for m, by in series.items() if by}
    if not series:
        return None
    names = sorted(series, key=lambda m: (not m.startswith("fid"), not m.startswith("kid"), m))[:3]
    fig = Figure(figsize=(4.4 * len(names), 3.2), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, m in zip(axes, names):
        for i, (label, pts) in enumerate(series[m].items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", markersize=3, color=f"C{i % 10}", label=label)
        ax.set_title(f"{m} over training", fontsize="medium")
        ax.set_xlabel("kimg")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return out_png


# ---------------------------------------------------------------------------------------------------------------------
# page pieces


class _Assets:
    """Files of the page under ``<out_dir>/report_files``: copies of run images and freshly drawn plots."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.dir = out_dir / ASSETS_DIR
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.dir / name

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()

    def copy(self, src: Path, name: str) -> str:
        dst = self.dir / name
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
        return self.rel(dst)


def _img(src: str, alt: str, cls: str, caption: str | None = None) -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img class="{cls}" src="{_e(src)}" alt="{_e(alt)}">{cap}</figure>'


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_section(run_root: Path) -> tuple[str, dict]:
    from ..config import PRESETS, RunConfig, load_file, resolve, to_dict
    from ..errors import ConfigError

    path = run_root / "config.yaml"
    try:
        cfg = load_file(path)
    except ConfigError:
        return "<p>No readable <code>config.yaml</code>.</p>", {}
    model = str((cfg.get("model") or {}).get("name", ""))
    if run_kind(run_root) == "cyclegan":  # another config class: no diff against the (G, D) defaults
        return (f"<h2>Config</h2><p class='sub'>A CycleGAN run (<code>degan cyclegan</code>).</p><details open>"
                f"<summary>full config.yaml</summary><pre>{_e(path.read_text(encoding='utf-8'))}</pre></details>"), cfg
    try:  # the run's own model preset, as the CLI starts from it (dcgan runs against dcgan's defaults)
        base, against = (resolve(preset=model), f"the <code>{_e(model)}</code> preset") if model in PRESETS \
            else (RunConfig(), "degan's defaults")
    except ConfigError:
        base, against = RunConfig(), "degan's defaults"
    flat, default = _flat(cfg), _flat(to_dict(base))
    changed = [(k, v, default.get(k, "(new key)")) for k, v in flat.items() if default.get(k, object()) != v]
    rows = "".join(f'<tr><td class="l"><code>{_e(k)}</code></td><td class="l">{_e(v)}</td>'
                   f'<td class="l">{_e(d)}</td></tr>' for k, v, d in changed)
    table = (f'<table><tr><th class="l">setting</th><th class="l">value</th><th class="l">default</th></tr>{rows}'
             "</table>") if changed else f"<p>All settings are those of {against}.</p>"
    text = path.read_text(encoding="utf-8")
    out = (f"<h2>Config</h2><p class='sub'>Settings that differ from {against}:</p>{table}"
           f"<details><summary>full config.yaml</summary><pre>{_e(text)}</pre></details>")
    return out, cfg


def _cards(run_root: Path, cfg: dict, rows: list[dict]) -> str:
    data = {}
    if (run_root / "data.json").is_file():
        try:
            data = read_json(run_root / "data.json")
        except ValueError:
            data = {}
    done = [r for r in rows if r.get("status") == "done"]
    total_ri = sum(int(r.get("real_images_shown") or 0) for r in done)
    wall = sum(float(r.get("train_seconds") or 0) + float(r.get("eval_seconds") or 0) for r in done)
    flops = [((r.get("costs") or {}).get("train_flops_effective")) for r in done]
    from .summary import _hms, format_flops

    d, m, t = cfg.get("data") or {}, cfg.get("model") or {}, cfg.get("train") or {}
    cards = [
        ("data", f"{Path(str(d.get('source', '?'))).name}"),
        ("training images", f"{data.get('num_selected', '?')} of {data.get('num_usable', '?')}"),
        ("resolution", f"{d.get('resolution', '?')} px, {d.get('channels', '?')} ch"),
        ("model", f"{m.get('name', '?')} x{m.get('width', '?')}"),
        ("augment", str(t.get("augment", "?"))),
        ("kimg per stage", f"{t.get('total_kimg', '?')}"),
        ("stages done", f"{len(done)} of {len(rows)}"),
        ("#RI (all stages)", f"{total_ri:,}"),
        ("training FLOPs (effective, all)", format_flops(sum(f for f in flops if f)) if any(flops) else "-"),
        ("wall time (all)", _hms(wall) if done else "-"),
    ]
    return "<div class='cards'>" + "".join(f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                           for k, v in cards) + "</div>"


def _table(rows: list[dict]) -> str:
    """The report.md table as HTML (same columns and formatting)."""
    from .summary import _costs_cells, _fmt_density, _fmt_metric, _stage_label, _wall, metric_names

    cols = metric_names(rows)
    show_variant = any(r.get("variant") for r in rows)
    head = ["level", "density G", "density D", "sparsity G", *cols, "#RI", "train FLOPs (dense)",
            "train FLOPs (effective)", "wall time", *(["variant"] if show_variant else []), "stage"]
    out = ["<div class='scroll'><table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        if r.get("status") != "done":
            cells = [_stage_label(r), "unfinished"] + ["-"] * (len(head) - 3) + [r["stage"]]
            out.append("<tr class='unfinished'>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
            continue
        dg, ri = r.get("density_G"), r.get("real_images_shown")
        dens_g = _fmt_density(r, "density_G")
        if r.get("flops_ratio") is not None:
            dens_g += f" (FLOPs {100 * r['flops_ratio']:.3g} %)"
        cells = [_stage_label(r), dens_g, _fmt_density(r, "density_D"),
                 "-" if dg is None else f"{100 * (1 - dg):.1f} %"]
        cells += [_fmt_metric(r["metrics"].get(c)) for c in cols]
        cells += ["-" if ri is None else f"{ri:,}", *_costs_cells(r), _wall(r)]
        if show_variant:
            cells.append(r.get("variant") or "-")
        cells.append(r["stage"])
        out.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    out.append("</table></div>")
    return "".join(out)


def _kimg_of(path: Path) -> int | None:
    m = re.fullmatch(r"fakes(\d+)\.png", path.name)
    return int(m.group(1)) if m else None


def _stage_warnings(stage_dir: Path) -> list[str]:
    """Plain-words warnings recorded in a stage folder (monitor, memorisation, leak check)."""
    out = []
    mon = [r for r in read_jsonl(stage_dir / "monitor.jsonl") if r.get("warning")]
    if mon:
        out.append(f"{mon[0]['warning']} (first at kimg {mon[0].get('kimg', '?')}; "
                   f"{len(mon)} of the monitor's measurements)")
    if (stage_dir / "memorization.json").is_file():
        try:
            out += list(read_json(stage_dir / "memorization.json").get("warnings") or [])
        except ValueError:
            pass
    if (stage_dir / "leak.json").is_file():
        try:
            suspect = read_json(stage_dir / "leak.json").get("suspect") or []
        except ValueError:
            suspect = []
        if suspect:
            out.append("augmentations may leak into the samples (ADA leak check): " + ", ".join(map(str, suspect)))
    return out


def _stage_section(r: dict, assets: _Assets, first: bool) -> str:
    from ..lottery.layout import StageLayout
    from ..train.monitor import plot_monitor

    st = StageLayout(Path(r["dir"]))
    name = st.root.name
    label = f"level {r['level']}" + (f" · {r['branch']}" if r.get("branch") else "")
    head = [f"<section class='stage' id='{_e(name)}'><h3>{_e(label)} <span class='sub'>({_e(name)}"]
    if r.get("density_G") is not None:
        head.append(f", density G {r['density_G']:.3f}, D {r.get('density_D') or 0:.3f}")
    head.append(")</span></h3>")
    if r.get("status") != "done":
        head.append("<p class='sub'>Unfinished: no done.json yet.</p>")
    parts = ["".join(head)]
    for w in _stage_warnings(st.root):
        parts.append(f"<div class='warn'>{_e(w)}</div>")

    figs = []
    if st.stats.is_file():
        png = plot_training_curves(st.stats, assets.path(f"{name}-curves.png"))
        if png is not None:
            figs.append(_img(assets.rel(png), f"training curves of {name}", "wide",
                             "Losses, D's mean output on the batches it trains on (augmented) and r_t, over kimg "
                             "(stats.jsonl)."))
    if st.monitor.is_file():
        try:
            png = plot_monitor(st.monitor, assets.path(f"{name}-monitor.png"))
            figs.append(_img(assets.rel(png), f"D overfitting monitor of {name}", "wide",
                             "D overfitting monitor (no augmentation): mean D output and accuracy on fixed training "
                             "reals, held-out reals and G_ema samples. Training accuracy rising while held-out "
                             "accuracy falls = D memorises (cf. Figure 2 of Chen et al. 2021)."))
        except ValueError:
            pass
    dyn = st.root / "dynamic.jsonl"
    if dyn.is_file():
        from ..errors import DataError
        from .dynamic import plot_density, plot_fid_regen

        for fn, suffix, cap in ((plot_density, "density", "RG-GAN: density of every masked layer over training "
                                 "(black: whole network; shaded: dense phases)."),
                                (plot_fid_regen, "regen", "RG-GAN: the regeneration trigger's metric over "
                                 "training; red = regenerate, green = pruning resumed.")):
            try:
                png, _ = fn(dyn, assets.path(f"{name}-dynamic-{suffix}.png"))
                figs.append(_img(assets.rel(png), cap, "plot", cap))
            except DataError:
                pass
    if (st.root / "ada_p.png").is_file():
        figs.append(_img(assets.copy(st.root / "ada_p.png", f"{name}-ada_p.png"), "ADA p", "plot",
                         "ADA: augmentation probability p and r_t over training."))
    if st.memorization_png.is_file():
        cap = "Nearest training neighbours (closest pairs first): each pair is generated | nearest real."
        if st.memorization.is_file():
            try:
                m = read_json(st.memorization)
                sp = m.get("pairs_space", "inception")
                s = (m.get("spaces") or {}).get(sp) or {}
                cap += (f" {sp}: NN ratio (samples / reals) {s.get('nn_ratio') or float('nan'):.3g}, copies "
                        f"{100 * (s.get('copy_fraction') or 0):.1f} %, diversity ratio "
                        f"{s.get('diversity_ratio') or float('nan'):.3g}.")
            except ValueError:
                pass
        figs.append(_img(assets.copy(st.memorization_png, f"{name}-memorization.png"), "nearest pairs", "plot", cap))
    if figs:
        parts.append("<div>" + "".join(figs) + "</div>")

    grids = sorted((p for p in st.samples.glob("fakes*.png") if _kimg_of(p) is not None), key=_kimg_of) \
        if st.samples.is_dir() else []
    if grids:
        if len(grids) > 8:  # keep the page light: first, last and evenly spaced ones between
            step = (len(grids) - 1) / 7
            grids = [grids[round(i * step)] for i in range(8)]
        strip = "".join(_img(assets.copy(p, f"{name}-{p.name}"), f"{name} samples at kimg {_kimg_of(p)}", "grid",
                             f"kimg {_kimg_of(p)}") for p in grids)
        parts.append(f"<p class='sub'>G_ema samples on fixed latents over training:</p><div class='strip'>{strip}</div>")
    if first and st.samples.is_dir():
        reals = [(st.samples / n, c) for n, c in (("reals.png", "training reals"),
                                                  ("reals_aug.png", "the same reals as D sees them (augmented)"))
                 if (st.samples / n).is_file()]
        if reals:
            parts.append("<div class='strip'>" + "".join(
                _img(assets.copy(p, f"{name}-{p.name}"), c, "grid", c) for p, c in reals) + "</div>")
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------------------
# the page


def write_html_report(run_root: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write ``report.html`` (and its images in ``report_files/``) for a run folder; returns the page's path.

    Args:
        run_root: the run folder (read only).
        out_dir: where ``report.html`` and ``report_files/`` go; None = the run folder.

    Returns:
        The path of ``report.html`` (written atomically, after all its images).

    Raises:
        FileNotFoundError: ``run_root`` is not a degan run folder (no stage folders and no config.yaml).
    """
    from .. import __version__
    from ..lottery.layout import RunLayout
    from .plots import fid_vs_density, run_label
    from .rows import collect

    run = RunLayout(Path(run_root))
    if not run.config.is_file() and not run.stages():
        raise FileNotFoundError(f"{str(run.root)!r} is not a degan run folder (no config.yaml, no level_<k> folders)")
    out_dir = Path(out_dir) if out_dir is not None else run.root
    assets = _Assets(out_dir)
    rows = collect(run.root)
    config_html, cfg = _config_section(run.root)
    label = run_label(run.root, rows) if rows else run.root.name

    warnings = []
    for r in rows:
        for w in _stage_warnings(Path(r["dir"])):
            warnings.append(f"{r['stage']}: {w}")
    unfinished = [r["stage"] for r in rows if r.get("status") != "done"]
    if unfinished:
        warnings.append("unfinished stages (no done.json): " + ", ".join(unfinished)
                        + " — resume with --resume latest")
    n_mon = sum((Path(r["dir"]) / "monitor.jsonl").is_file() for r in rows)
    n_mem = sum((Path(r["dir"]) / "memorization.json").is_file() for r in rows)
    checked = (f"D overfitting monitor in {n_mon} of {len(rows)} stages (<code>eval.monitor_every_kimg</code>); "
               f"memorisation and collapse check in {n_mem} of {len(rows)} "
               "(<code>degan eval RUN --memorization</code>).")
    warn_html = ("".join(f"<div class='warn'>{_e(w)}</div>" for w in warnings)
                 or "<div class='ok'>No warnings.</div>") + f"<p class='sub'>Checked: {checked}</p>"

    body = [f"<h1>degan report: {_e(run.root.name)}</h1>",
            f"<p class='sub'>{_e(label)} · generated {_e(_dt.datetime.now().strftime('%Y-%m-%d %H:%M'))} by degan "
            f"{_e(__version__)} · run folder <code>{_e(run.root.resolve())}</code></p>",
            _cards(run.root, cfg, rows), "<h2>Warnings</h2>", warn_html,
            "<h2>Results</h2>", _table(rows),
            "<p class='sub'>#RI = real images shown to D. Training FLOPs: dense = the same schedule with dense "
            "networks; effective = counting only the unpruned weights (percentage = effective / dense). Wall time = "
            "training (incl. snapshots) + evaluation. " + ("Metrics are computed on the trained generators "
            "(A2B = G_AB(A) against domain B, B2A = G_BA(B) against domain A)." if run_kind(run.root) == "cyclegan"
            else "Metrics are computed on G_ema.") + "</p>"]
    protocol = next((m.get("protocol") for r in rows for m in (r.get("metrics") or {}).values()
                     if m.get("protocol")), None)
    if protocol:
        body.append("<p class='sub'>Metric protocol: " + _e(", ".join(f"{k} = {v}" for k, v in protocol.items()
                                                                      if v is not None)) + "</p>")
    figs = []
    try:
        png = fid_vs_density([run.root], assets.path("fid_vs_density.png"), assets.path("fid_vs_density.csv"),
                             network=_network(cfg))
        figs.append(_img(assets.rel(png), "metric vs remaining weights", "plot",
                         "FID (or KID) vs remaining weights over the levels and branches; dashed: dense level 0."))
    except (ValueError, FileNotFoundError):
        pass
    png = plot_metric_curves([(r["stage"], Path(r["dir"]) / "metrics.jsonl") for r in rows],
                             assets.path("metrics_over_kimg.png"))
    if png is not None:
        figs.append(_img(assets.rel(png), "metrics over training", "plot", "Metrics evaluated during training."))
    grid_file, caption = (("translate_latest.png", "Final translation grids of every stage (rows: A, G_AB(A), "
                           "G_BA(G_AB(A)), B, G_BA(B), G_AB(G_BA(B)))") if run_kind(run.root) == "cyclegan"
                          else ("fakes_latest.png", "Final G_ema samples of every stage (fixed latents)"))
    finals = [(r, Path(r["dir"]) / "samples" / grid_file) for r in rows if r.get("status") == "done"]
    finals = [(r, p) for r, p in finals if p.is_file()]
    if finals:
        figs.append("<figure><div class='strip'>" + "".join(
            _img(assets.copy(p, f"{r['stage']}-final.png"), f"final samples of {r['stage']}", "grid",
                 f"{r['stage']}" + ("" if r.get("density_G") is None else f" (G {100 * r['density_G']:.3g} %)"))
            for r, p in finals) + f"</div><figcaption>{caption}.</figcaption></figure>")
    if figs:
        body.append("<div>" + "".join(figs) + "</div>")
    body.append("<h2>Stages</h2>")
    for i, r in enumerate(rows):
        body.append(_stage_section(r, assets, first=(i == 0)))
    if not rows:
        body.append("<p>No stage folders yet.</p>")
    body.append(config_html)

    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>degan report: {_e(run.root.name)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")
    path = out_dir / "report.html" if out_dir != run.root else run.report_html
    write_text(path, page)
    return path


def _network(cfg: dict) -> str:
    nets = {n.strip() for n in str((cfg.get("prune") or {}).get("networks", "G,D")).split(",") if n.strip()}
    return "D" if nets == {"D"} else "G"
