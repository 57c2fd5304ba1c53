"""Early-bird tickets: draw the mask while the network still trains, once the magnitude masks stop changing.

You et al., *Drawing Early-Bird Tickets*, ICLR 2020; for GANs Kalibhat, Balaji, Feizi, *Winning Lottery Tickets in
Deep Generative Models*, AAAI 2021 (SPEC §10). ``degan ticket --early-bird`` (``prune.early_bird``):

- every ``prune.eb_every_kimg`` of a level that will be pruned, the magnitude mask the next level would get is
  computed from the live weights with the run's own rule (IMP: prune ``rate`` of the remaining weights of G or
  G_ema by ``prune.mask_source`` and of D, global or layer-wise; OMP: straight to the final density
  ``(1 - rate) ** levels``);
- the distance between consecutive masks is the normalised Hamming distance: entries that differ / all entries of
  the pruned networks' masks (G and D together);
- when the largest of the last ``prune.eb_window`` (5) distances is below ``prune.eb_eps`` (0.1 in You et al.), the
  ticket is drawn: the level stops there (its final checkpoint holds the weights the mask is drawn from), and the
  next level is pruned from them and rewound as usual.

Schedules: iterative (``imp_global``/``imp_layerwise``): every level but the last stops at its early-bird point;
the last level trains in full. One-shot (``omp``): the dense level 0 stops when the mask at the final density
converges, and only the last level (that density) is trained; the levels in between are skipped. The compute spent
before each draw is in the level's ``done.json`` (``real_images_shown``, ``costs``) with ``early_bird`` (the kimg of
the draw, the distances); ``early_bird.json`` in the level folder holds every check.

The checks read weights only (no randomness, no gradient), so a level trains exactly as without them until the draw.
"""

from __future__ import annotations

import torch

from ..fileio import write_json
from ..pruning import PRUNERS, get_mask, ones_like_mask
from ..train.loop import Callback
from ..train.technique import CALLBACK_ORDER, StageContext, Technique, register_technique

EB_JSON = "early_bird.json"


def mask_distance(a: dict[str, dict], b: dict[str, dict]) -> float:
    """Normalised Hamming distance between two sets of masks ``{net: {layer: 0/1 tensor}}``: the fraction of mask
    entries, over every layer of every network, that differ; in [0, 1].

    Raises:
        ValueError: the two sets do not have the same networks, layers and shapes.
    """
    diff = total = 0
    if a.keys() != b.keys():
        raise ValueError(f"masks of different networks: {sorted(a)} vs {sorted(b)}")
    for net in a:
        if a[net].keys() != b[net].keys():
            raise ValueError(f"masks of {net} have different layers")
        for layer, m in a[net].items():
            other = b[net][layer]
            if m.shape != other.shape:
                raise ValueError(f"mask {net}.{layer}: shapes {tuple(m.shape)} vs {tuple(other.shape)}")
            diff += int((m.bool() != other.bool()).sum())
            total += m.numel()
    return diff / total if total else 0.0


class EarlyBirdState:
    """Checkpointed: the previous check's masks (bool tensors), every distance, and the draw point."""

    def __init__(self) -> None:
        self.prev: dict[str, dict] | None = None
        self.history: list[dict] = []
        self.drawn_at_nimg: int | None = None

    def state_dict(self) -> dict:
        return {"prev": self.prev, "history": list(self.history), "drawn_at_nimg": self.drawn_at_nimg}

    def load_state_dict(self, sd: dict) -> None:
        self.prev = sd.get("prev")
        self.history = list(sd.get("history", []))
        self.drawn_at_nimg = sd.get("drawn_at_nimg")


class EarlyBird(Callback):
    """The early-bird check of one level (see the module docstring).

    Args:
        ctx: the stage context.
        state: the :class:`EarlyBirdState` (``TrainState.extras["early_bird"]``).
        next_masks: ``fn(train_state) -> {net: mask}``: the masks the next level would get from the live weights.
        every_kimg: check period, kimg. eps: distance threshold. window: distances that must all be below ``eps``.
    """

    def __init__(self, ctx: StageContext, state: EarlyBirdState, next_masks, every_kimg: float, eps: float,
                 window: int) -> None:
        self.ctx, self.state, self.next_masks = ctx, state, next_masks
        self.every_nimg, self.eps, self.window = max(1, int(round(every_kimg * 1000))), float(eps), int(window)
        self._next = self.every_nimg

    def on_train_start(self, trainer) -> None:
        self._next = (trainer.state.cur_nimg // self.every_nimg + 1) * self.every_nimg
        if self.state.drawn_at_nimg is not None:  # resumed after the draw: the level ends there
            trainer.total_nimg = min(trainer.total_nimg, int(self.state.drawn_at_nimg))

    def on_step_end(self, trainer, stats) -> None:
        s = trainer.state
        if s.cur_nimg < self._next or self.state.drawn_at_nimg is not None:
            return
        self._next = (s.cur_nimg // self.every_nimg + 1) * self.every_nimg
        self.check(trainer)

    @torch.no_grad()
    def check(self, trainer) -> None:
        s, st = trainer.state, self.state
        masks = {net: {k: v.bool() for k, v in m.items()} for net, m in self.next_masks(s).items()}
        rec = {"kimg": s.kimg, "cur_nimg": s.cur_nimg, "step": s.step}
        if st.prev is not None:
            rec["distance"] = mask_distance(st.prev, masks)
        st.prev = masks
        st.history.append(rec)
        recent = [h["distance"] for h in st.history if "distance" in h][-self.window:]
        if len(recent) == self.window and max(recent) < self.eps and s.cur_nimg < trainer.total_nimg:
            st.drawn_at_nimg = s.cur_nimg
            trainer.total_nimg = s.cur_nimg
            self.ctx.exp.log(f"[degan] {self.ctx.stage.root.name}: early-bird ticket drawn at kimg {s.kimg:.1f} "
                             f"(the last {self.window} mask distances are below {self.eps:g}: "
                             + ", ".join(f"{d:.3f}" for d in recent) + "); the level stops here")
            if len(st.history) == self.window + 1 and max(recent) < self.eps / 2:
                # drawn at the first check that can draw, with every distance far below eps: the threshold, not the
                # masks, decided the draw (benchmarks/early_bird_drift.py: a small GAN's masks drift steadily)
                self.ctx.exp.log(f"[degan] warning: the draw came at the first possible check and every distance was "
                                 f"below half of prune.eb_eps={self.eps:g}; the masks may still be moving. A "
                                 "smaller prune.eb_eps (e.g. the distances' size / 2) or a longer "
                                 "prune.eb_every_kimg draws later (docs/reproduce.md#early-bird-tickets)")
        write_json(self.ctx.stage.root / EB_JSON, {
            "eps": self.eps, "window": self.window, "every_kimg": self.every_nimg / 1000,
            "drawn_at_kimg": None if st.drawn_at_nimg is None else st.drawn_at_nimg / 1000, "history": st.history})


def _live_next_masks(ctx: StageContext):
    """``fn(train_state) -> {net: mask}`` with the run's pruning rule applied to the live weights."""
    cfg = ctx.cfg
    nets = [n.strip() for n in cfg.prune.networks.split(",") if n.strip()]
    method = cfg.prune.method
    pruner = PRUNERS.get(method)
    final_density = (1.0 - cfg.prune.rate) ** cfg.prune.levels

    def next_masks(state) -> dict[str, dict]:
        out = {}
        for name in nets:
            net = state.G_ema if (name == "G" and cfg.prune.mask_source == "G_ema") else getattr(state, name)
            if method == "omp":
                out[name] = pruner(net, ones_like_mask(net), target_density=final_density)
            else:
                out[name] = pruner(net, get_mask(net), cfg.prune.rate)
        return out

    return next_masks


class EarlyBirdTechnique(Technique):
    """The early-bird check as a stage technique (checkpointed state + callback + summary)."""

    name, callback_order = "early_bird", CALLBACK_ORDER["best"]

    def __init__(self, ctx: StageContext) -> None:
        self.ctx, self.eb = ctx, EarlyBirdState()

    def setup(self, state) -> None:
        state.extras["early_bird"] = self.eb

    def callbacks(self, state) -> list:
        p = self.ctx.cfg.prune
        return [EarlyBird(self.ctx, self.eb, _live_next_masks(self.ctx), p.eb_every_kimg, p.eb_eps, p.eb_window)]

    def summary(self, state) -> dict:
        eb = self.eb
        dists = [h["distance"] for h in eb.history if "distance" in h]
        return {"early_bird": {"drawn_at_kimg": None if eb.drawn_at_nimg is None else eb.drawn_at_nimg / 1000,
                               "checks": len(eb.history), "last_distances": dists[-self.ctx.cfg.prune.eb_window:],
                               "eps": self.ctx.cfg.prune.eb_eps}}


def early_bird_levels(cfg) -> list[int]:
    """The levels a ``degan ticket`` run trains: all of ``0..levels``; with ``--early-bird`` and the one-shot
    method ``omp`` only 0 (until the draw) and the last level."""
    L = cfg.prune.levels
    if getattr(cfg.prune, "early_bird", False) and cfg.prune.method == "omp" and L > 1:
        return [0, L]
    return list(range(L + 1))


@register_technique("early_bird")
def _early_bird(ctx: StageContext):
    p = ctx.cfg.prune
    if not getattr(p, "early_bird", False) or ctx.role != "level" or p.levels < 1:
        return None
    level = ctx.stage.level
    watched = (level == 0) if p.method == "omp" else (level < p.levels)
    return EarlyBirdTechnique(ctx) if watched else None
