"""The self-supervised reconstruction loss of a discriminator with decoders (FastGAN), as an objective term and the
``recon`` technique.

Source: Liu, Zhu, Song, Elgammal. *Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis*. ICLR 2021, arXiv:2101.04775, Eq. 4: D is also trained as an encoder, its simple decoders reconstructing
the real images from D's features::

    L_recons = E_{x ~ reals} [ sum_k d(Dec_k(f_k(x)), T_k(x)) ]        added to L_D, weight lambda (recon.weight)

with three decoders (the whole image from the 8x8 trunk map, the whole image from the 8x8 small-branch map, a random
quarter from a quarter of the 16x16 trunk map; :meth:`degan.models.fastgan.FastGANDiscriminator.reconstruction_pairs`)
on the reals D scored in the same step, after augmentation (the released code reconstructs the DiffAugmented reals).

The distance ``d``:

- **LPIPS** (the paper: LPIPS-VGG of Zhang et al., CVPR 2018) when ``recon.lpips`` names a TorchScript file or a
  ``torch.export`` program (``.pt2``) of a module ``f(x, y)`` returning one distance per image for images in
  [-1, 1]. LPIPS needs ImageNet backbone weights that the ``lpips`` package downloads at run time; degan never
  downloads, so it takes the module from a file (docs/fastgan.md shows how to write one where the weights are at
  hand).
- **L1 pixel distance** otherwise (the default): the mean absolute difference per image. This is a documented
  deviation from the paper: a pixel loss weights colour and low frequencies more than LPIPS does, so the
  decoders learn blurrier reconstructions; the term still makes D keep the information needed to describe the
  reals, which is its purpose (paper section 3.2).

Reduction: the mean over the batch of the per-image distances (the paper's expectation), summed over the three
decoders, times ``recon.weight`` (paper 1). The released code sums over the batch (weight = batch size, 8).

Cost: the trunk maps of the real pass are reused when D offers :meth:`record_maps` and the pass that scored the
reals is found by identity; otherwise (e.g. a compiled D) the trunk runs once more on the reals with frozen
statistics (:func:`degan.augment.advaug.frozen_statistics`: no BatchNorm running-average update, no extra
spectral-norm power iteration).

Randomness: the quarter per image is drawn from the augmentation generator passed to ``d_loss`` (checkpointed with
the train state), so resumed runs continue bit-identically; nothing else is stateful.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .losses import ObjectiveWrapper
from .train.technique import StageContext, Technique, register_technique

__all__ = ["ReconObjective", "ReconTechnique", "declares_reconstruction", "l1_distance", "load_lpips",
           "supports_reconstruction"]

Distance = Callable[[Tensor, Tensor], Tensor]
ORDER = 5  # objective wrapping order: right outside the adversarial objective (AdvAug 0), inside LeCam (10) and R1


def supports_reconstruction(D: nn.Module) -> bool:
    """Whether ``D`` has decoders: a ``reconstruction_pairs(real, quadrant, maps=None)`` method."""
    return callable(getattr(D, "reconstruction_pairs", None))


def l1_distance(x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute difference per image: float ``[N, C, H, W]`` x 2 -> float ``[N]``."""
    return (x - y).abs().flatten(1).mean(dim=1)


def load_lpips(path: str | Path, device: torch.device | str = "cpu") -> Distance:
    """A frozen LPIPS module from ``path`` as a distance ``d(x, y) -> [N]`` (images float ``[N, C, H, W]`` in [-1, 1]).

    ``path``: a ``torch.export`` program (``.pt2``, exported with a dynamic batch dimension; loaded with
    ``torch.export.load(path).module()``) or a TorchScript file (any other suffix; ``torch.jit.load``). The module is
    called as ``f(x, y)`` and may return ``[N]`` or ``[N, 1, 1, 1]`` (the ``lpips`` package's shape); its parameters
    are frozen (gradients still flow to the reconstructions).

    Raises:
        ConfigError: the file is missing or holds no loadable module.
    """
    import warnings

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recon.lpips={str(path)!r} does not exist; give a TorchScript or torch.export LPIPS file "
                          "(docs/fastgan.md) or drop recon.lpips for the L1 pixel distance")
    try:
        if p.suffix == ".pt2":
            module = torch.export.load(str(p)).module().to(device)
        else:
            with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; the file is TorchScript
                warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
                module = torch.jit.load(str(p), map_location=device)
            module.eval()
    except Exception as e:  # noqa: BLE001  (any failure to read the file is the user's file, not a degan bug)
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"recon.lpips={str(path)!r} is not a TorchScript module or a torch.export program "
                          f"({first}); docs/fastgan.md shows how to write one") from None
    for prm in module.parameters():
        prm.requires_grad_(False)

    def lpips_distance(x: Tensor, y: Tensor) -> Tensor:
        return module(x, y).reshape(x.shape[0], -1).mean(dim=1)

    return lpips_distance


@contextlib.contextmanager
def _recording(D: nn.Module):
    record = getattr(D, "record_maps", None)
    if record is None:
        yield []
    else:
        with record() as recs:
            yield recs


class ReconObjective(ObjectiveWrapper):
    """Adds ``weight * L_recons`` on the reals of the D step to the wrapped objective's D loss; G loss unchanged.

    Args:
        objective: a :class:`~degan.losses.GANObjective` (or a wrapper) that records ``last_d_pass``.
        weight: lambda (>= 0).
        distance: per-image distance ``d(x, y) -> [N]`` (:func:`l1_distance` or :func:`load_lpips`).

    Stats: ``loss_recon`` (the term before the weight) and ``recon_all`` / ``recon_small`` / ``recon_part``.

    Raises:
        RuntimeError: the wrapped objective did not record its D pass.
    """

    def __init__(self, objective, weight: float = 1.0, distance: Distance = l1_distance) -> None:
        super().__init__(objective)
        self.weight, self.distance = float(weight), distance

    def d_loss(self, G: nn.Module, D: nn.Module, real: Tensor, z: Tensor,
               generator: torch.Generator | None = None, **kwargs) -> tuple[Tensor, dict[str, float]]:
        with _recording(D) as recs:
            loss, stats = self.objective.d_loss(G, D, real, z, generator, **kwargs)
        p = self.objective.last_d_pass
        if p is None:
            raise RuntimeError("the wrapped objective did not record its D pass; the reconstruction term needs "
                               "last_d_pass")
        term, parts = self.term(D, p["real"], generator, maps=next((m for x, m in recs if x is p["real"]), None))
        stats = dict(stats, loss_recon=float(term.detach()), **{f"recon_{k}": v for k, v in parts.items()})
        return loss + self.weight * term, stats

    def term(self, D: nn.Module, real: Tensor, generator: torch.Generator | None = None,
             maps=None) -> tuple[Tensor, dict[str, float]]:
        """``L_recons`` of ``D`` on ``real`` (float ``[N, C, R, R]``, the reals as D saw them) and its parts.

        ``maps``: D's trunk maps of ``real`` if already computed; else the trunk runs again with frozen statistics.
        """
        device = generator.device if generator is not None else real.device
        quadrant = torch.randint(0, 4, (real.shape[0],), generator=generator, device=device).to(real.device)
        if maps is None:
            from .augment.advaug import frozen_statistics

            with frozen_statistics(D):
                pairs = D.reconstruction_pairs(real, quadrant)
        else:
            pairs = D.reconstruction_pairs(real, quadrant, maps=maps)
        dists = {name: self.distance(rec, target.detach()).mean() for name, rec, target in pairs}
        term = sum(dists.values())
        return term, {k: float(v.detach()) for k, v in dists.items()}


class ReconTechnique(Technique):
    """The ``recon`` technique: wraps the objective with :class:`ReconObjective` (``recon.weight``, the distance
    ``recon.lpips`` selects). Built for models that declare the term (:func:`declares_reconstruction`); ``wrap``
    leaves the objective alone if the stage's D has no decoders after all."""

    name, order = "recon", ORDER

    def __init__(self, weight: float, lpips: str | None) -> None:
        self.weight, self.lpips = weight, lpips
        self.active = False

    def wrap(self, objective, state):
        if not supports_reconstruction(state.D):
            return objective
        device = next(state.D.parameters()).device
        distance = load_lpips(self.lpips, device) if self.lpips else l1_distance
        self.active = True
        return ReconObjective(objective, self.weight, distance)

    def summary(self, state) -> dict:
        if not self.active:
            return {}
        return {"recon": {"weight": self.weight, "distance": "lpips" if self.lpips else "l1", "lpips": self.lpips}}


def declares_reconstruction(model_name: str) -> bool:
    """Whether the registered model ``model_name`` declares the ``recon`` objective term (its builder's
    ``objective_terms``, e.g. ``fastgan``)."""
    from .models import MODELS

    return model_name in MODELS and "recon" in getattr(MODELS.get(model_name), "objective_terms", ())


@register_technique("recon")
def _recon(ctx: StageContext):
    rc = ctx.cfg.recon
    if rc.weight <= 0 or not declares_reconstruction(ctx.cfg.model.name):
        return None
    if rc.lpips:  # fail before training, not at the first D step
        load_lpips(rc.lpips)
    return ReconTechnique(rc.weight, rc.lpips)
