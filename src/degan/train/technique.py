"""The technique interface: one way in for everything a stage adds to plain GAN training.

A *technique* (ADA, LeCam, R1, RG-GAN, AdvAug, KD, slimming, precision, the D monitor, TensorBoard, ...) is built
for one stage from the config and the stage (:class:`StageContext`) and may, in this order:

1. ``make_state(G, D, opt_kw)``: build the :class:`~degan.train.state.TrainState` itself (RG-GAN's threshold
   parameter groups); at most one enabled technique may do this.
2. ``setup(state)``: register checkpointed state in ``state.extras`` (anything with ``state_dict`` /
   ``load_state_dict``). Called before a resume loads the checkpoint, so the saved state lands in it.
   ``before_resume(saved)`` then sees the saved state and may refuse it (precision).
3. ``callbacks(state)``: loop callbacks (``degan.train.loop.Callback``), placed by ``callback_order``.
4. ``wrap(objective, state)``: wrap the objective (``GANObjective`` and its wrappers) with loss terms; wrappers are
   applied by increasing ``order`` (the lowest is innermost, next to the adversarial loss).
5. ``finish(state)`` after training, before evaluation: write plots or outputs; may return the final densities
   ``{"G": float, "D": float}`` when the technique changes them (RG-GAN).
6. ``summary(state)``: a dict merged into the stage's ``done.json``.

A technique module registers a factory ``fn(ctx) -> Technique | None`` (None: not enabled for this stage)::

    from degan.train.technique import Technique, register_technique

    class ConsistencyReg(Technique):
        name, order = "cr", 25

        def wrap(self, objective, state):
            return CRObjective(objective, weight=self.weight)

    @register_technique("cr")
    def build(ctx):
        return ConsistencyReg() if ctx.cfg.cr.enabled else None

and is imported once (the stage runner imports the built-in ones, :mod:`degan.lottery.techniques`). The stage runner
(:func:`degan.lottery.stage.run_stage`) builds every registered technique for each stage and never names one;
a caller may add stage-specific instances (``run_stage(..., techniques=[...])``, e.g. the slimming stage of a
channel ticket). See ``docs/techniques.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..registry import Registry

#: Objective wrapping orders of the built-in techniques (lowest = innermost).
ORDER = {"lecam": 10, "r1": 20, "ada": 30, "dynamic": 40, "kd": 50, "distill": 50, "precision": 100}
#: Callback orders of the built-in techniques and of the stage's own callbacks (lowest runs first each step).
#: The snapshot runs last: a checkpoint at kimg X is written after every log record of X, so a stage resumed from
#: it (whose logs are cut back to X) repeats no record and misses none.
CALLBACK_ORDER = {"precision": 0, "progress": 5, "dynamic": 10, "rewind": 20, "slimming": 20, "ada": 30,
                  "flops": 40, "stats": 50, "monitor": 70, "best": 75, "tensorboard": 80, "snapshot": 90}


@dataclass
class StageContext:
    """What a technique factory may look at.

    Attributes:
        exp: the prepared :class:`degan.lottery.runner.Experiment` (config, data, device, run folder, log).
        stage: the stage folder (:class:`degan.lottery.layout.StageLayout`).
        augment: the stage's augmentation pipeline (DiffAugment / ADA) or None.
        role: ``"level"`` (an IMP level of ``degan ticket``), ``"train"`` (``degan train``) or ``"branch"``.
        info: free-form facts the caller knows (``{"grid_z": ...}``); techniques must not require them.
    """

    exp: Any
    stage: Any
    augment: Any = None
    role: str = "train"
    info: dict = field(default_factory=dict)

    @property
    def cfg(self):
        return self.exp.cfg


class Technique:
    """Base class: every hook does nothing. Override the hooks a technique needs (see the module docstring)."""

    name: str = "technique"
    order: int = 50  # objective wrapping order
    callback_order: int = 50
    changes_density: bool = False  # True: densities change during training (the stats logger reads them live)

    def make_state(self, G, D, opt_kw: dict):
        return None

    def setup(self, state) -> None:
        pass

    def before_resume(self, saved: dict) -> None:
        """Refuse a checkpoint this technique cannot continue (raise a DeganError naming the fix)."""

    def callbacks(self, state) -> list:
        return []

    def wrap(self, objective, state):
        return objective

    def finish(self, state) -> dict | None:
        return None

    def summary(self, state) -> dict:
        return {}

    def __repr__(self) -> str:
        return f"<technique {self.name}>"


TechniqueFactory = Callable[[StageContext], "Technique | None"]
TECHNIQUES: Registry[TechniqueFactory] = Registry("technique")


def register_technique(name: str) -> Callable[[TechniqueFactory], TechniqueFactory]:
    """Decorator registering a technique factory ``fn(ctx) -> Technique | None`` under ``name``."""
    return TECHNIQUES.register(name)


def build_techniques(ctx: StageContext, extra: list[Technique] | None = None) -> list[Technique]:
    """Every enabled registered technique for the stage, plus ``extra`` instances, in objective-wrapping order.

    Raises:
        ValueError: two techniques build the train state, or two share a name.
    """
    out = [t for t in (TECHNIQUES.get(n)(ctx) for n in TECHNIQUES.names()) if t is not None]
    out += list(extra or [])
    names = [t.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"techniques enabled twice in one stage: {', '.join(dup)}")
    return sorted(out, key=lambda t: t.order)


def make_stage_state(techniques: list[Technique], G, D, opt_kw: dict, default: Callable):
    """The train state of a stage: from the one technique that builds it, else ``default(G, D, **opt_kw)``.

    Raises:
        ValueError: more than one technique builds the state.
    """
    states = [(t, s) for t in techniques if (s := t.make_state(G, D, opt_kw)) is not None]
    if len(states) > 1:
        raise ValueError("only one technique may build the train state; got "
                         + ", ".join(t.name for t, _ in states))
    return states[0][1] if states else default(G, D, **opt_kw)


def wrap_objective(techniques: list[Technique], objective, state):
    """Apply every technique's ``wrap`` by increasing ``order`` (innermost first)."""
    for t in sorted(techniques, key=lambda t: t.order):
        objective = t.wrap(objective, state)
    return objective


def ordered_callbacks(entries: list[tuple[int, object]]) -> list:
    """Callbacks sorted by their order (stable: equal orders keep the given order)."""
    return [cb for _, cb in sorted(entries, key=lambda e: e[0])]
