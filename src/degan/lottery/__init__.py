"""Lottery-ticket runs: IMP levels (prune -> rewind -> train), training of found tickets, run folders.

Modules, bottom to top: ``layout`` (run-folder paths), ``masks`` (mask files, the IMP step and the level loop over
any dict of named networks: (G, D) here, the four networks of :mod:`degan.cyclegan` there), ``experiment`` (config ->
data, networks, masks, theta_0, evaluation, generator files), ``techniques`` (the built-in stage techniques),
``stage`` (``run_stage``: one level or branch), ``branches`` and ``channel`` (control experiments and channel tickets
beside a level), ``runner`` (the level loop: ``run_ticket``, ``run_train``; it re-exports the names of ``experiment``
for compatibility).
"""

from .layout import RunLayout, StageLayout, find_stage
from .runner import (
    Experiment,
    build_networks,
    evaluate_generator,
    experiment_for,
    load_generator,
    load_masks,
    prepare,
    run_stage,
    run_ticket,
    run_train,
    save_masks,
)

__all__ = [
    "RunLayout", "StageLayout", "find_stage", "Experiment", "build_networks", "evaluate_generator",
    "experiment_for", "load_generator", "load_masks", "prepare", "run_stage", "run_ticket", "run_train", "save_masks",
]
