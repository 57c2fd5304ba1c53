"""Everything needed to resume training exactly: networks, optimizers, counters, RNG states."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError

GENERATOR_NAMES = ("latent", "batch", "augment")


@dataclass
class TrainState:
    """The complete mutable state of a training stage.

    Attributes:
        G, D: generator and discriminator (masked layers carry their masks as buffers).
        G_ema: exponential moving average of G's weights (same masks), used for evaluation.
        opt_G, opt_D: Adam optimizers.
        step: G steps done.
        cur_nimg: real images shown to D so far (#RI); kimg = cur_nimg / 1000.
        generators: seeded ``torch.Generator`` per stream: latents, batch indices and flips, augmentation.
        wall_seconds: training wall time accumulated over resumes, seconds.
        extras: other stateful parts of the run (objects with ``state_dict()`` / ``load_state_dict()``: the FLOPs
            meter, dynamic-pruning state, ...), saved under ``"extras"`` and restored by name on resume.
    """

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    step: int = 0
    cur_nimg: int = 0
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    wall_seconds: float = 0.0
    extras: dict = field(default_factory=dict)

    @property
    def kimg(self) -> float:
        return self.cur_nimg / 1000.0

    def state_dict(self) -> dict:
        """A dict of tensors and plain Python values, loadable with ``torch.load(weights_only=True)``."""
        return {
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "step": self.step,
            "cur_nimg": self.cur_nimg,
            "wall_seconds": self.wall_seconds,
            "rng": {name: g.get_state() for name, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "extras": {name: obj.state_dict() for name, obj in self.extras.items()},
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore from :meth:`state_dict`.

        Raises:
            CheckpointError: keys or shapes do not match these networks (another model or config).
        """
        try:
            for key in ("G", "D", "G_ema"):
                getattr(self, key).load_state_dict(sd[key], strict=True)
            self.opt_G.load_state_dict(sd["opt_G"])
            self.opt_D.load_state_dict(sd["opt_D"])
        except (RuntimeError, KeyError, ValueError) as e:
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            first = "; ".join(lines[:2])[:300]  # torch's heading, then the first missing key or size mismatch
            raise CheckpointError(
                f"checkpoint does not fit this model/config ({first}); "
                "resume with the same --model, width and resolution it was written with"
            ) from None
        self.step = int(sd["step"])
        self.cur_nimg = int(sd["cur_nimg"])
        self.wall_seconds = float(sd.get("wall_seconds", 0.0))
        for name, s in sd.get("rng", {}).items():
            if name in self.generators:
                self.generators[name].set_state(s)
        if "torch_rng" in sd:
            torch.set_rng_state(sd["torch_rng"])
        for name, extra in sd.get("extras", {}).items():
            if name in self.extras:
                self.extras[name].load_state_dict(extra)


def make_generators(seed: int) -> dict[str, torch.Generator]:
    """One CPU ``torch.Generator`` per random stream, seeded from ``seed`` (streams independent)."""
    return {name: torch.Generator().manual_seed(seed * 1000 + i) for i, name in enumerate(GENERATOR_NAMES)}


def make_state(G: nn.Module, D: nn.Module, *, lr_G: float, lr_D: float, betas: tuple[float, float],
               eps: float = 1e-8, seed: int = 0) -> TrainState:
    """Build a fresh :class:`TrainState` (G_ema = a copy of G, Adam for G and D)."""
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    betas = (float(betas[0]), float(betas[1]))
    opt_G = torch.optim.Adam(G.parameters(), lr=lr_G, betas=betas, eps=eps)
    opt_D = torch.optim.Adam(D.parameters(), lr=lr_D, betas=betas, eps=eps)
    return TrainState(G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D, generators=make_generators(seed))


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, decay: float | None) -> None:
    """``theta_ema <- decay * theta_ema + (1 - decay) * theta``; buffers (BN stats, masks) are copied.

    ``decay=None`` copies G into G_ema (no averaging).
    """
    ema_params, params = list(G_ema.parameters()), list(G.parameters())
    if decay is None:
        torch._foreach_copy_(ema_params, [p.detach() for p in params])
    else:
        torch._foreach_lerp_(ema_params, [p.detach() for p in params], 1.0 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
