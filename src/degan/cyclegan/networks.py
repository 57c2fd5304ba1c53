"""The four CycleGAN networks by name, the groups ``prune.networks`` selects, and the final translators on disk."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn

from ..errors import CheckpointError
from ..fileio import read_json
from ..lottery.layout import StageLayout
from ..lottery.masks import load_masks as _load_masks
from ..lottery.masks import prune_networks, save_masks  # noqa: F401  (save_masks re-exported)
from ..models.cyclegan import create_translation_model
from ..pruning import Mask, add_masks
from .config import CycleGANConfig

NETS = ("G_AB", "G_BA", "D_A", "D_B")
"""The four networks, in a fixed order: generators A->B and B->A, discriminators of domain A and B."""
NETWORK_GROUPS = {"G": ("G_AB", "G_BA"), "D": ("D_A", "D_B")}
"""``prune.networks`` groups: ``G`` = both generators, ``D`` = both discriminators."""


def build_networks(cfg: CycleGANConfig, seed: int | None = None) -> dict[str, nn.Module]:
    """The four networks ``{"G_AB", "G_BA", "D_A", "D_B"}`` with all-ones masks on the prunable layers, seeded.

    Raises:
        ValueError: bad model options.
    """
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    kw = dict(resolution=cfg.data.resolution, img_channels=cfg.data.channels, width=cfg.model.width,
              n_blocks=cfg.model.n_blocks, n_layers=cfg.model.n_layers)
    G_AB, D_B = create_translation_model(cfg.model.name, **kw)
    G_BA, D_A = create_translation_model(cfg.model.name, **kw)
    nets = {"G_AB": G_AB, "G_BA": G_BA, "D_A": D_A, "D_B": D_B}
    for net in nets.values():
        add_masks(net, cfg.prune.prunable)
    return nets


def pruned_networks(cfg: CycleGANConfig) -> list[str]:
    """Names of the networks ``prune.networks`` selects, e.g. ``["G_AB", "G_BA"]`` for ``G``."""
    groups = [g.strip() for g in cfg.prune.networks.split(",") if g.strip()]
    return [n for g in ("G", "D") if g in groups for n in NETWORK_GROUPS[g]]


def load_translators(stage: str | Path, device: torch.device | str = "cpu") -> dict[str, nn.Module]:
    """Rebuild ``{"G_AB", "G_BA"}`` of a finished level from ``translators.safetensors`` + ``generator.json``.

    Raises:
        CheckpointError: the level has no final translators.
    """
    st = StageLayout(Path(stage))
    if not st.translators.is_file() or not st.generator_json.is_file():
        raise CheckpointError(f"{st.root} has no translators.safetensors; has the level finished?")
    meta = read_json(st.generator_json)
    flat = load_safetensors(str(st.translators))
    out = {}
    for name in ("G_AB", "G_BA"):
        G, _ = create_translation_model(meta["model"], **meta["kwargs"])
        add_masks(G, meta["prunable"])
        G.load_state_dict({k[len(name) + 1:]: v for k, v in flat.items() if k.startswith(name + ".")})
        out[name] = G.to(device).eval().requires_grad_(False)
    return out


def next_masks(cfg: CycleGANConfig, trained: dict[str, dict], prev: dict[str, Mask], k: int,
               dense: dict[str, dict] | None = None) -> dict[str, Mask]:
    """Masks of level ``k >= 1``: ``rate`` of each pruned network's remaining weights, that network ranked on its own
    (the shared IMP step :func:`degan.lottery.masks.prune_networks` over the four networks).

    Args:
        cfg: the run config (``prune`` section; ``random`` pruning draws with seed ``prune.seed * 1000 + 10 k + i``
            for the i-th network of :data:`NETS`).
        trained: state dicts ``{net: sd}`` of level k-1's trained networks (``omp`` uses ``dense`` = level 0's).
        prev: level k-1's masks. Networks not in ``prune.networks`` keep theirs.
        k: the level the masks are for (>= 1).

    Returns:
        ``{net: Mask}`` for all four networks; each pruned one has density ``(1 - rate) ** k`` (up to ties).

    Raises:
        ValueError: masks or weights that do not fit the networks of ``cfg``.
    """
    nets = build_networks(cfg)
    chosen = pruned_networks(cfg)
    source = dense if cfg.prune.method == "omp" else trained
    for name in chosen:
        nets[name].load_state_dict(source[name])
    seeds = {name: cfg.prune.seed * 1000 + 10 * k + i for i, name in enumerate(NETS)}
    return prune_networks(nets, prev, chosen, method=cfg.prune.method, rate=cfg.prune.rate, level=k, seeds=seeds)


def load_masks(path: str | Path) -> dict[str, Mask]:
    """Read a CycleGAN level's ``masks.safetensors`` as ``{"G_AB", "G_BA", "D_A", "D_B"}`` masks
    (:func:`degan.lottery.masks.load_masks` over :data:`NETS`).

    Raises:
        CheckpointError: missing or unreadable file, keys not prefixed by one of the four names, non-binary values.
    """
    return _load_masks(path, NETS)
