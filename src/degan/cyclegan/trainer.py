"""Training one CycleGAN level: the resumable state and the game's iteration (G step, then D step)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, TrainingDivergedError
from ..pruning import enforce_masks
from ..train.loop import images_to_float, run_with_callbacks
from .config import CycleGANConfig
from .losses import generator_loss, lsgan_loss
from .networks import NETS, NETWORK_GROUPS
from .pool import ImagePool


def _chain(nets: dict[str, nn.Module], names: Iterable[str]) -> list[nn.Parameter]:
    return [p for n in names for p in nets[n].parameters()]


@dataclass
class CycleState:
    """Everything needed to resume a level exactly.

    Attributes:
        nets: ``{"G_AB", "G_BA", "D_A", "D_B"}``.
        opt_G: Adam over both generators. opt_D: Adam over both discriminators.
        pools: image pools of fakes ``{"A", "B"}`` (fakes *of* domain A, judged by D_A; likewise B).
        step: iterations done. cur_nimg: images of each domain shown to its D (kimg = cur_nimg / 1000).
        generators: seeded CPU ``torch.Generator`` per stream (``batch``: indices and flips, ``pool``).
        wall_seconds: training time over resumes.
    """

    nets: dict[str, nn.Module]
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    pools: dict[str, ImagePool]
    step: int = 0
    cur_nimg: int = 0
    generators: dict[str, torch.Generator] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def kimg(self) -> float:
        return self.cur_nimg / 1000.0

    def state_dict(self) -> dict:
        """Tensors and plain values only (``torch.load(weights_only=True)``)."""
        return {"nets": {n: m.state_dict() for n, m in self.nets.items()}, "opt_G": self.opt_G.state_dict(),
                "opt_D": self.opt_D.state_dict(), "pools": {k: p.state_dict() for k, p in self.pools.items()},
                "step": self.step, "cur_nimg": self.cur_nimg, "wall_seconds": self.wall_seconds,
                "rng": {k: g.get_state() for k, g in self.generators.items()}, "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, sd: dict) -> None:
        """Restore from :meth:`state_dict`.

        Raises:
            CheckpointError: the checkpoint was written for other networks or settings.
        """
        try:
            for n, m in self.nets.items():
                m.load_state_dict(sd["nets"][n], strict=True)
            self.opt_G.load_state_dict(sd["opt_G"])
            self.opt_D.load_state_dict(sd["opt_D"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise CheckpointError(f"checkpoint does not fit these CycleGAN networks ({str(e).splitlines()[0][:200]}); "
                                  "resume with the settings it was written with") from None
        device = next(self.nets["G_AB"].parameters()).device
        for k, p in self.pools.items():
            p.load_state_dict(sd["pools"][k], device)
        self.step, self.cur_nimg = int(sd["step"]), int(sd["cur_nimg"])
        self.wall_seconds = float(sd.get("wall_seconds", 0.0))
        for k, s in sd.get("rng", {}).items():
            if k in self.generators:
                self.generators[k].set_state(s)
        if "torch_rng" in sd:
            torch.set_rng_state(sd["torch_rng"])


def make_state(nets: dict[str, nn.Module], cfg: CycleGANConfig) -> CycleState:
    """Fresh optimizers, empty pools and seeded random streams for ``nets``."""
    o = cfg.optim
    betas = (o.beta1, o.beta2)
    opt_G = torch.optim.Adam(_chain(nets, NETWORK_GROUPS["G"]), lr=o.lr_G, betas=betas)
    opt_D = torch.optim.Adam(_chain(nets, NETWORK_GROUPS["D"]), lr=o.lr_D, betas=betas)
    seed = cfg.train.seed
    gens = {name: torch.Generator().manual_seed(seed * 1000 + 17 + i) for i, name in enumerate(("batch", "pool"))}
    pools = {"A": ImagePool(cfg.train.pool_size), "B": ImagePool(cfg.train.pool_size)}
    return CycleState(nets=nets, opt_G=opt_G, opt_D=opt_D, pools=pools, generators=gens)


def lr_scale(cur_nimg: int, total_nimg: int, decay_start: float | None) -> float:
    """Linear decay factor in [0, 1]: 1 before ``decay_start * total``, then linearly to 0 at the end."""
    if decay_start is None or total_nimg <= 0:
        return 1.0
    f = cur_nimg / total_nimg
    return 1.0 if f < decay_start else max(0.0, (1.0 - f) / (1.0 - decay_start))


class CycleTrainer:
    """The CycleGAN game on two in-memory image sets (its own loop: :class:`degan.train.loop.Trainer` draws latents
    for one (G, D) pair, while here two generators map images and the identity and cycle terms tie them together).

    One iteration: ``batch`` reals of A and of B; a G step on both generators (LSGAN + cycle + identity), masks
    re-enforced; a D step on both discriminators against pooled fakes, masks re-enforced; lr decay from ``cur_nimg``.
    Callbacks get ``on_train_start(trainer)``, ``on_step_end(trainer, stats)``, ``on_train_end(trainer)`` and can read
    ``trainer.state`` (``step``, ``cur_nimg``, ``kimg``, ``wall_seconds``) and ``trainer.total_nimg`` (so the progress
    bar and stats logger of :mod:`degan.train.callbacks` work unchanged).

    Args:
        state: :class:`CycleState`, mutated in place.
        images_A, images_B: uint8 ``[N, C, H, W]`` training images of each domain.
        cfg: the run config (``train`` and ``optim`` sections are used).
        device: where to train.
        callbacks: called in order.

    Raises:
        ValueError: images that are not uint8 NCHW with equal C, H, W in both domains.
        TrainingDivergedError: a NaN / inf loss.
    """

    def __init__(self, state: CycleState, images_A: Tensor, images_B: Tensor, cfg: CycleGANConfig, *,
                 device: torch.device | str = "cpu", callbacks: Iterable = ()) -> None:
        for name, x in (("images_A", images_A), ("images_B", images_B)):
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[0] < 1:
                raise ValueError(f"{name} must be uint8 [N, C, H, W] with N >= 1, got {x.dtype} {tuple(x.shape)}")
        if images_A.shape[1:] != images_B.shape[1:]:
            raise ValueError(f"both domains need the same [C, H, W]; got {tuple(images_A.shape[1:])} and "
                             f"{tuple(images_B.shape[1:])}")
        self.state, self.cfg, self.device = state, cfg, torch.device(device)
        self.images = {"A": images_A.to(self.device), "B": images_B.to(self.device)}
        self.total_nimg = int(round(cfg.train.total_kimg * 1000))
        self.callbacks = list(callbacks)

    def real_batch(self, domain: str) -> Tensor:
        """``batch`` reals of ``domain`` drawn with replacement (seeded), optionally x-flipped, float in [-1, 1]."""
        gen, n, imgs = self.state.generators["batch"], self.cfg.train.batch, self.images[domain]
        idx = torch.randint(0, imgs.shape[0], (n,), generator=gen)
        x = images_to_float(imgs[idx.to(self.device)])
        if self.cfg.data.mirror:
            flip = (torch.rand(n, generator=gen) < 0.5).to(self.device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def _check(self, loss: Tensor, name: str) -> None:
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"{name} became {float(loss.detach())} at kimg {self.state.kimg:.2f} (step "
                                        f"{self.state.step}); lower the learning rates or check the data, then resume")

    def _set_lr(self) -> None:
        s = lr_scale(self.state.cur_nimg, self.total_nimg, self.cfg.train.lr_decay_start)
        for opt, lr in ((self.state.opt_G, self.cfg.optim.lr_G), (self.state.opt_D, self.cfg.optim.lr_D)):
            for g in opt.param_groups:
                g["lr"] = lr * s

    def train_step(self) -> dict[str, float]:
        """One iteration (G step then D step, as the reference). Returns the stats."""
        s, t = self.state, self.cfg.train
        G_AB, G_BA, D_A, D_B = (s.nets[n].train() for n in NETS)
        self._set_lr()
        real_A, real_B = self.real_batch("A"), self.real_batch("B")

        D_A.requires_grad_(False)
        D_B.requires_grad_(False)
        loss_G, parts, (fake_A, fake_B) = generator_loss(s.nets, real_A, real_B, t.lambda_cycle, t.lambda_identity)
        gan, cyc, idt = parts["gan"], parts["cycle"], parts["identity"]
        self._check(loss_G, "loss_G")
        s.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        s.opt_G.step()
        enforce_masks(G_AB)
        enforce_masks(G_BA)

        D_A.requires_grad_(True)
        D_B.requires_grad_(True)
        pool_A = s.pools["A"].query(fake_A.detach(), s.generators["pool"])
        pool_B = s.pools["B"].query(fake_B.detach(), s.generators["pool"])
        d_real_A, d_fake_A = D_A(real_A), D_A(pool_A)
        d_real_B, d_fake_B = D_B(real_B), D_B(pool_B)
        loss_D_A = 0.5 * (lsgan_loss(d_real_A, True) + lsgan_loss(d_fake_A, False))
        loss_D_B = 0.5 * (lsgan_loss(d_real_B, True) + lsgan_loss(d_fake_B, False))
        loss_D = loss_D_A + loss_D_B
        self._check(loss_D, "loss_D")
        s.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        s.opt_D.step()
        enforce_masks(D_A)
        enforce_masks(D_B)

        s.cur_nimg += t.batch
        s.step += 1
        loss_G, gan, cyc, idt = loss_G.detach(), gan.detach(), cyc.detach(), idt.detach()
        loss_D, loss_D_A, loss_D_B = loss_D.detach(), loss_D_A.detach(), loss_D_B.detach()
        d_real_A, d_fake_A, d_real_B, d_fake_B = (x.detach() for x in (d_real_A, d_fake_A, d_real_B, d_fake_B))
        return {"loss_G": float(loss_G), "loss_D": float(loss_D), "loss_G_gan": float(gan), "loss_cycle": float(cyc),
                "loss_identity": float(idt), "loss_D_A": float(loss_D_A), "loss_D_B": float(loss_D_B),
                "D_A_real": float(d_real_A.mean()), "D_A_fake": float(d_fake_A.mean()),
                "D_B_real": float(d_real_B.mean()), "D_B_fake": float(d_fake_B.mean()),
                "lr_G": s.opt_G.param_groups[0]["lr"]}

    def run(self) -> CycleState:
        """Train until ``total_kimg``; continues from ``state.cur_nimg`` after a resume."""
        return run_with_callbacks(self)
