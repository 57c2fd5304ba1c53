"""Lottery-ticket runs: IMP levels (prune -> rewind -> train), training of found tickets, run folders."""

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
