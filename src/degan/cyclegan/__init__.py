"""CycleGAN lottery tickets: the image-to-image setting of GAN-LTH (unpaired domains A and B).

Sources: Zhu, Park, Isola, Efros. *Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks*.
ICCV 2017, arXiv:1703.10593 (networks, losses, image pool, schedule); Chen, Zhang, Sui, Chen. *GANs Can Play
Lottery Tickets Too*. ICLR 2021, arXiv:2106.00134 (IMP on CycleGAN, horse2zebra; Algorithm 1).

The game (two pairs: ``G_AB: A -> B`` judged by ``D_B``, ``G_BA: B -> A`` judged by ``D_A``):

- LSGAN (Mao et al. 2017): ``L_D = 0.5 * (mean((D(x) - 1)^2) + mean(D(pool(G(y)))^2))``,
  ``L_G = mean((D(G(y)) - 1)^2)``.
- cycle consistency: ``lambda_cycle * (|G_BA(G_AB(a)) - a|_1 + |G_AB(G_BA(b)) - b|_1)``, ``lambda_cycle = 10``.
- identity: ``lambda_identity * (|G_AB(b) - b|_1 + |G_BA(a) - a|_1)``, ``lambda_identity = 5`` (the reference code's
  ``0.5 * lambda_cycle``, the setting GAN-LTH trains with). L1 terms are means over elements.
- D sees fakes through an image pool of the last 50 generated images per domain (Shrivastava et al. 2017): each fake
  either goes straight to D or, with probability 1/2 once the pool is full, swaps with a stored older fake.
- Adam lr 2e-4, betas (0.5, 0.999) for both generators (one optimizer) and both discriminators (one optimizer);
  linear decay of the lr to 0 over the second half of training (the reference's 100 + 100 epochs), optional.
- No EMA generator (CycleGAN evaluates the trained generators).

Lottery tickets (GAN-LTH Algorithm 1): level 0 trains the dense pair of pairs from theta_0; level k prunes ``rate`` of
the remaining weights of each chosen network by magnitude (``degan.pruning`` pruners, every network ranked on its
own: ``G_AB``, ``G_BA``, ``D_A``, ``D_B``), rewinds the kept weights of all four networks to theta_0 and trains
again. GAN-LTH's CycleGAN tickets prune the generators (IMP_G, the default ``prune.networks="G"``; the
discriminators stay dense and are reset to their theta_0); ``"G,D"`` also prunes both discriminators (IMP_GD).

What differs from the reference implementation, and why: training length is counted in kimg (thousands of images
of each domain shown to its D) instead of epochs; batches are drawn with replacement from seeded generators; the
identity term is skipped when its weight is 0.

The run folder is the lottery layout (:mod:`degan.lottery.layout`): ``config.yaml``, ``env.json``, ``data.json``,
``subset.json`` (indices of both domains), ``init.pt`` (theta_0 of the four networks) and ``level_<k>/`` with
``masks.safetensors`` (keys ``G_AB.<param>``, ``G_BA.<param>``, ``D_A.<param>``, ``D_B.<param>``), ``density.json``,
``checkpoints/``, ``stats.jsonl``, ``metrics.jsonl``, ``samples/translate<kimg>.png``, ``translators.safetensors``,
``done.json``. Re-running skips finished levels; ``resume=True`` continues an unfinished one.

Modules, bottom to top: ``config`` (the dataclasses and their validation; loading and hashing are
:mod:`degan.config`'s), ``data`` (the two domains), ``networks`` (the four networks by name), ``losses``, ``pool``
(image pool), ``trainer`` (state and iteration), ``grid`` (translations, grids, snapshots), ``evaluate`` (FID / KID
both ways), ``run`` (run folder, levels, report on the shared lottery machinery).
"""

from .config import (
    CycleDataConfig,
    CycleEvalConfig,
    CycleGANConfig,
    CycleModelConfig,
    CycleOptimConfig,
    CyclePruneConfig,
    CycleTrainConfig,
    cli_overrides,
    config_hash,
    dump_yaml,
    parse_classes,
    parse_metric_kinds,
    resolve_config,
    validate,
)
from .data import Domain, class_filter, load_domain
from .evaluate import evaluate_translation, load_extractor
from .grid import CycleSnapshot, translate, translation_grid
from .losses import cycle_loss, generator_loss, identity_loss, lsgan_loss
from .networks import (
    NETS,
    NETWORK_GROUPS,
    build_networks,
    load_masks,
    load_translators,
    next_masks,
    pruned_networks,
    save_masks,
)
from .pool import ImagePool
from .run import (
    CycleExperiment,
    evaluate_level,
    evaluate_run,
    experiment_for,
    initial_weights,
    level_start,
    prepare,
    run_cyclegan,
    run_folder,
    run_level,
    variant_name,
)
from .trainer import CycleState, CycleTrainer, lr_scale, make_state

__all__ = ["NETS", "NETWORK_GROUPS", "CycleDataConfig", "CycleEvalConfig", "CycleExperiment", "CycleGANConfig",
           "CycleModelConfig", "CycleOptimConfig", "CyclePruneConfig", "CycleSnapshot", "CycleState",
           "CycleTrainConfig", "CycleTrainer", "Domain", "ImagePool", "build_networks", "class_filter",
           "cli_overrides", "config_hash", "cycle_loss", "dump_yaml", "evaluate_level", "evaluate_run",
           "evaluate_translation", "experiment_for", "generator_loss", "identity_loss", "initial_weights",
           "level_start", "load_domain", "load_extractor", "load_masks", "load_translators", "lr_scale", "lsgan_loss",
           "make_state", "next_masks", "parse_classes", "parse_metric_kinds", "prepare", "pruned_networks",
           "resolve_config", "run_cyclegan", "run_folder", "run_level", "save_masks", "translate", "translation_grid",
           "validate", "variant_name"]
