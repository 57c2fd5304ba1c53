"""The rows of a run report: one per stage folder (levels and branches), read from ``done.json`` and
``metrics.jsonl``. Shared by the Markdown report, the plots and the HTML page."""

from __future__ import annotations

from pathlib import Path

from ..fileio import read_json, read_jsonl


def run_kind(run_root: str | Path) -> str:
    """``cyclegan`` for a CycleGAN run folder (its ``config.yaml`` names two domains, ``data.source_a``), else ``gan``
    (the (G, D) families; also when ``config.yaml`` is missing or unreadable)."""
    from ..config import load_file
    from ..errors import ConfigError

    try:
        data = load_file(Path(run_root) / "config.yaml").get("data") or {}
    except ConfigError:
        return "gan"
    return "cyclegan" if isinstance(data, dict) and "source_a" in data else "gan"


def collect(run_root: str | Path) -> list[dict]:
    """One row per stage folder of a run: the levels and their branches, in the order of ``RunLayout.stages()``.

    A finished stage's row is its ``done.json`` merged with the latest value of each metric in ``metrics.jsonl``
    (later evaluations, e.g. ``degan eval``, add to or override ``done.json``'s metrics).

    Args:
        run_root: the run folder.

    Returns:
        Rows with at least ``stage`` (folder name, e.g. ``level_2_random_ticket``), ``level`` (int), ``branch``
        (str or None for a level), ``variant`` (str or None), ``status`` (``done`` | ``unfinished``), ``dir``
        (Path) and ``metrics`` (``{name: {"value", "std", "protocol"}}``); finished rows also carry the keys of
        ``done.json`` (``density_G``, ``density_D``, ``real_images_shown``, ``costs``, ``flops_ratio``...).
        ``level`` and ``branch`` come from the folder name. CycleGAN levels (``images_shown_per_domain`` in
        ``done.json``) get ``real_images_shown`` = twice that: each domain's D saw as many reals.
    """
    from ..lottery.layout import RunLayout

    rows = []
    for stage in RunLayout(Path(run_root)).stages():
        ident = {"stage": stage.root.name, "level": stage.level, "branch": stage.branch, "dir": stage.root}
        if not stage.is_done():
            rows.append({**ident, "variant": None, "status": "unfinished", "metrics": {}})
            continue
        done = read_json(stage.done)
        row = {**done, **ident, "variant": done.get("variant"), "status": "done"}
        if "real_images_shown" not in row and "images_shown_per_domain" in row:
            row["real_images_shown"] = 2 * int(row["images_shown_per_domain"])
        metrics = dict(row.get("metrics") or {})
        for rec in read_jsonl(stage.metrics):
            if "metric" in rec:
                metrics[rec["metric"]] = {"value": rec.get("value"), "std": rec.get("std"),
                                          "protocol": rec.get("protocol")}
        row["metrics"] = metrics
        rows.append(row)
    return rows
