"""Channel-pruned GAN tickets: network slimming (GAN-LTH Algorithm 2), then the compact G retrained from theta_0.

Source: T. Chen, Y. Cheng, Z. Gan, J. Liu, Z. Wang. *GANs Can Play Lottery Tickets Too*. ICLR 2021,
arXiv:2106.00134, §3, §4 (Claim 1), §7 and Appendix A1.1 Algorithm 2; SPEC.md §3. The slimming machinery is in
:mod:`degan.pruning.slimming`.

Two stages beside the source level ``level_<k>`` of the run:

1. ``level_<k>_slim``: the search. G and D start from the weights level k starts from (theta_0 / phi_0 unless the
   run uses late rewinding; Algorithm 2 lines 1-2 initialise and train from theta_0, it does not start from the
   trained weights) under level k's masks, and train with the run's objective plus the distillation term to the
   frozen trained ``G_ema`` of level k (:class:`~degan.pruning.slimming.GeneratorDistillation`) while the
   proximal L1 step shrinks the selecting BatchNorm scales of G after every G step
   (:class:`~degan.pruning.slimming.SlimmingProximal`). ``slim_start="trained"`` starts from level k's trained
   G and D instead (GAN Slimming's setting; the paper's §4 also speaks of extracting subnetworks "from the trained
   full SNGAN"). D has no normalisation layers in the registered models, so its channels are not searched
   (m_d = level k's D mask).
2. ``level_<k>_channel``: the ticket. Channels are selected from the slimmed raw G (gamma = 0, or the
   ``threshold`` / ``prune_fraction`` rules of :func:`~degan.pruning.slimming.select_channels`), the compact G is
   rebuilt with Torch-Pruning and the sliced start weights of step 1 (theta_0 for the default rewind; level k's
   weight mask is sliced the same way and stays applied), D starts from the same weights as in step 1, and the
   pair is trained with the run's schedule and objective (no slimming terms) and evaluated like any level.

``done.json`` of the channel stage adds ``flops_ratio`` (forward FLOPs of the compact over the dense G),
``channel_sparsity = 1 - flops_ratio`` (the paper's sparsity of a channel ticket), parameter counts and the kept
channels per layer; ``generator.json`` adds ``kept_channels`` so :mod:`degan.export` can rebuild the compact G.
``channels.json`` in the channel stage records the selection (reused on re-runs).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from ..config import variant_name
from ..errors import DeganError
from ..fileio import read_json, write_json
from ..pruning import add_masks, set_mask
from ..pruning.slimming import (
    build_compact_generator,
    compact_generator,
    count_params,
    generator_flops,
    select_channels,
    slice_mask,
)
from .layout import StageLayout
from .experiment import (
    Experiment,
    build_networks,
    final_state,
    initial_weights,
    level_start,
    load_masks,
    model_kwargs,
)
from ..export import load_generator
from .stage import run_stage

SLIM_STARTS = ("init", "trained")


def _start_weights(exp: Experiment, level_stage: StageLayout, slim_start: str) -> dict:
    """G and D weights the slimming stage and the ticket start from."""
    if slim_start == "trained":
        state = final_state(level_stage)
        return {"G": state["G"], "D": state["D"]}
    init = initial_weights(exp)
    if level_stage.level > 0:
        return level_start(exp, init)
    return {"G": init["G"], "D": init["D"]}


def _with_kimg(exp: Experiment, kimg: float | None, metrics: str | None = None) -> Experiment:
    cfg = exp.cfg
    train = cfg.train if kimg is None else dataclasses.replace(cfg.train, total_kimg=float(kimg))
    ev = cfg.eval if metrics is None else dataclasses.replace(cfg.eval, metrics=metrics)
    return dataclasses.replace(exp, cfg=dataclasses.replace(cfg, train=train, eval=ev))


def run_channel_branch(exp: Experiment, level_stage: StageLayout, *, rho: float = 5e-4, distill_weight: float = 1.0,
                       slim_kimg: float | None = None, threshold: float = 0.0, prune_fraction: float | None = None,
                       slim_start: str = "init", resume: bool = False, progress: bool = True) -> dict:
    """Find and train the channel-pruned ticket of ``level_stage`` (see the module docstring).

    Args:
        exp: the run's experiment (:func:`~degan.lottery.runner.prepare` or ``experiment_for``).
        level_stage: the finished source level (usually ``exp.run.level(0)``, the dense level); its trained
            ``G_ema`` is the distillation teacher and its masks stay applied.
        rho: L1 strength of the proximal step on the BatchNorm scales, >= 0 (SPEC default 5e-4; see
            :class:`~degan.pruning.slimming.SlimmingProximal` for its useful range with Adam).
        distill_weight: weight of ``mean((G(z) - G_dense(z))^2)`` in the slimming stage's G loss, >= 0 (0 = off).
        slim_kimg: length of the slimming stage in kimg; None = the run's ``train.total_kimg``.
        threshold: channels with ``|gamma| <= threshold`` are removed (0: exactly the zeroed ones).
        prune_fraction: additionally remove this share of all selecting channels with the smallest ``|gamma|``
            (Liu et al. 2017's global percentile rule), in [0, 1); None = off.
        slim_start: ``"init"`` (Algorithm 2: theta_0 / phi_0, or the run's rewind point) or ``"trained"``.
        resume: continue unfinished stages from their latest checkpoints.
        progress: show progress bars.

    Returns:
        The channel stage's ``done.json`` summary (with ``flops_ratio``, ``channel_sparsity``, ``params_G_dense``,
        ``params_G_compact``, ``flops_G_dense``, ``flops_G_compact``, ``channels``, ``kept_channels``).

    Raises:
        DeganError: the source level is not finished, an option is invalid, or a stage has an unfinished training
            and ``resume`` is False.
    """
    if not level_stage.is_done():
        raise DeganError(f"{level_stage.root} is not a finished level; train it first (its trained G_ema is the "
                         "distillation teacher)")
    if slim_start not in SLIM_STARTS:
        raise DeganError(f"slim_start must be one of {', '.join(SLIM_STARTS)}; got {slim_start!r}")
    if not (rho >= 0 and distill_weight >= 0 and threshold >= 0):
        raise DeganError(f"rho, distill_weight and threshold must be >= 0; got {rho}, {distill_weight}, {threshold}")
    if prune_fraction is not None and not 0.0 <= prune_fraction < 1.0:
        raise DeganError(f"prune_fraction must be in [0, 1); got {prune_fraction}")
    if slim_kimg is not None and not slim_kimg > 0:
        raise DeganError(f"slim_kimg must be > 0 (or None for the run's train.total_kimg); got {slim_kimg}")
    cfg = exp.cfg
    k = level_stage.level
    slim, chan = exp.run.branch(k, "slim"), exp.run.branch(k, "channel")
    if chan.is_done():
        exp.log(f"[degan] {chan.root.name} already finished; skipping (delete {chan.done} to redo it)")
        return read_json(chan.done)
    options = {"rho": rho, "distill_weight": distill_weight, "slim_kimg": slim_kimg, "threshold": threshold,
               "prune_fraction": prune_fraction, "slim_start": slim_start}
    base = {"variant": variant_name(cfg.prune), "source_level": k}
    masks = load_masks(level_stage.masks)
    start = _start_weights(exp, level_stage, slim_start)

    # (a) the slimming stage: L_GAN + distillation, proximal L1 on the BatchNorm scales of G
    if not slim.is_done():
        from .techniques import Slimming

        teacher = load_generator(level_stage, exp.device)
        run_stage(_with_kimg(exp, slim_kimg, metrics="none"), slim, start, masks, resume=resume, progress=progress,
                  techniques=[Slimming(rho, teacher, distill_weight)], role="branch",
                  extra_info={**base, "branch": "slim", **options, "teacher": level_stage.root.name})

    # (b) channel selection from the slimmed raw G (the proximal step makes exact zeros there, not in G_ema)
    channels_file = chan.root / "channels.json"
    if channels_file.is_file():
        kept = read_json(channels_file)["kept_channels"]
    else:
        G_slim, _ = build_networks(cfg)
        G_slim.load_state_dict(final_state(slim)["G"])
        kept = select_channels(G_slim, threshold, prune_fraction=prune_fraction)
        gammas = {n: m.weight.detach().abs().cpu() for n, m in G_slim.named_modules() if n in kept}
        write_json(channels_file, {"source": slim.root.name, "threshold": threshold, "prune_fraction": prune_fraction,
                                   "kept_channels": kept,
                                   "zero_gammas": {n: int((g == 0).sum()) for n, g in gammas.items()},
                                   "total": {n: int(g.numel()) for n, g in gammas.items()}})

    # (c) the compact G with the sliced start weights (theta_0) and sliced mask; D as in the slimming stage
    G_start, _ = build_networks(cfg)
    G_start.load_state_dict(start["G"])
    set_mask(G_start, masks["G"])
    small = compact_generator(G_start, kept)
    small_mask = slice_mask(G_start, kept, masks["G"])
    add_masks(small, cfg.prune.prunable)
    set_mask(small, small_mask)
    init_c = {"G": small.state_dict(), "D": start["D"]}
    masks_c = {"G": small_mask, "D": masks["D"]}

    dense_plain = compact_generator(G_start, {})
    flops_dense, flops_small = generator_flops(dense_plain), generator_flops(small)
    ratio = flops_small / flops_dense
    totals = {n: m.num_features for n, m in dense_plain.named_modules() if n in kept}
    info = {**base, "branch": "channel", **options, "slim_stage": slim.root.name,
            "flops_ratio": ratio, "channel_sparsity": 1.0 - ratio,
            "flops_G_dense": flops_dense, "flops_G_compact": flops_small,
            "params_G_dense": count_params(dense_plain), "params_G_compact": count_params(small),
            "channels": {n: {"kept": len(idx), "total": totals[n]} for n, idx in kept.items()},
            "kept_channels": kept}
    exp.log(f"[degan] {chan.root.name}: compact G keeps {sum(map(len, kept.values()))} of {sum(totals.values())} "
            f"selectable channels, FLOPs ratio {ratio:.3f} (channel sparsity {1 - ratio:.1%})")

    def build(cfg_) -> tuple[nn.Module, nn.Module]:
        G = build_compact_generator(cfg_.model.name, model_kwargs(cfg_), kept, prunable=cfg_.prune.prunable,
                                    spectral_norm=cfg_.model.spectral_norm)
        _, D = build_networks(cfg_)
        return G, D

    return run_stage(exp, chan, init_c, masks_c, resume=resume, progress=progress, extra_info=info, build=build,
                     role="branch",
                     generator_meta={"kept_channels": kept, "compact": True})


__all__ = ["SLIM_STARTS", "run_channel_branch"]
