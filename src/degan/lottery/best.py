"""When to stop: the best G_ema so far, by a cheap metric on a fixed sample, and optional early stopping.

With ``--best-every KIMG`` (``eval.best_every_kimg``) a stage evaluates ``eval.best_metric`` (a small KID or FID
protocol, ``kid500_train`` by default: 500 samples of G_ema on the evaluation seed's fixed latents against the
training images, whose features are cached) every KIMG thousand real images. A new lowest value saves
``G_ema_best.safetensors`` (the format of ``G_ema.safetensors``; :func:`load_best_generator` rebuilds it) and rewrites
``best.json`` (every check so far, the best one, and whether training stopped early). The stage's final metrics are
those of the last G_ema, as without the check.
``--early-stop N`` (``eval.early_stop``) ends the stage after N checks in a row without a new best, keeping the final
checkpoint and evaluating as usual; ``done.json`` then says ``early_stopped_at_kimg``.

The check state (best value and kimg, checks since the best, every value) is checkpointed with the training state,
so a resumed stage makes the same decisions as an uninterrupted one. The checks draw no randomness from the training
streams (the evaluation has its own seed), so turning them on leaves the training itself bit-identical.

Cost on a CPU: one check generates ``N`` images and extracts their Inception features (500 at about 3-4 images/s on
2 cores is about 2-3 minutes), so pick a period of several kimg; the training reals' features are computed once.
"""

from __future__ import annotations

import math

from safetensors.torch import save_file as save_safetensors

from ..fileio import atomic_path, write_json
from ..metrics.evaluate import auto_num_gen
from ..train.loop import Callback
from ..train.technique import CALLBACK_ORDER, StageContext, Technique, register_technique
from .experiment import evaluate_generator

BEST_FILE = "G_ema_best.safetensors"
BEST_JSON = "best.json"
ORDER = CALLBACK_ORDER["best"]  # after the loggers and the D monitor, before TensorBoard and the snapshot (which sees a stop)


class BestState:
    """The checkpointed state of the check: plain values (``torch.load(weights_only=True)``-safe)."""

    def __init__(self) -> None:
        self.history: list[dict] = []
        self.best: dict | None = None
        self.since_best = 0
        self.stopped_at_nimg: int | None = None

    def state_dict(self) -> dict:
        return {"history": list(self.history), "best": self.best, "since_best": self.since_best,
                "stopped_at_nimg": self.stopped_at_nimg}

    def load_state_dict(self, sd: dict) -> None:
        self.history = list(sd.get("history", []))
        self.best = sd.get("best")
        self.since_best = int(sd.get("since_best", 0))
        self.stopped_at_nimg = sd.get("stopped_at_nimg")


class BestSnapshot(Callback):
    """Every ``every_kimg``: evaluate, keep the best G_ema, stop after ``patience`` checks without improvement.

    Args:
        ctx: the stage context (run folder, config, log).
        state: the :class:`BestState` (registered in ``TrainState.extras["best"]``).
        every_kimg: check period, kimg (> 0).
        metric: a metric protocol where lower is better (``kid500_train``).
        patience: checks without a new best before stopping; None = never stop early.
        evaluate: ``fn(G_ema) -> float``; default: :func:`degan.lottery.experiment.evaluate_generator` on
            ``metric``.
    """

    def __init__(self, ctx: StageContext, state: BestState, every_kimg: float, metric: str,
                 patience: int | None = None, evaluate=None) -> None:
        self.ctx, self.state, self.metric, self.patience = ctx, state, metric, patience
        self.every_nimg = max(1, int(round(every_kimg * 1000)))
        self.evaluate = evaluate or self._evaluate
        self._next = self.every_nimg

    def _evaluate(self, G_ema) -> float:
        exp = self.ctx.exp
        was_training = G_ema.training
        try:
            n = exp.cfg.eval.num_gen or auto_num_gen(exp.images.shape[0], exp.device)  # when the name has no count
            return float(evaluate_generator(exp, G_ema, [self.metric], n)[0]["value"])
        finally:
            G_ema.train(was_training)

    def on_train_start(self, trainer) -> None:
        n = trainer.state.cur_nimg
        self._next = (n // self.every_nimg + 1) * self.every_nimg
        if self.state.stopped_at_nimg is not None:  # resumed after the stop was decided: stop again, at once
            trainer.total_nimg = min(trainer.total_nimg, int(self.state.stopped_at_nimg))

    def on_step_end(self, trainer, stats) -> None:
        s = trainer.state
        if s.cur_nimg < self._next:
            return
        self._next = (s.cur_nimg // self.every_nimg + 1) * self.every_nimg
        self.check(trainer)

    def check(self, trainer) -> None:
        """Evaluate G_ema now; save it when best; decide on early stopping."""
        s, st, stage = trainer.state, self.state, self.ctx.stage
        value = self.evaluate(s.G_ema)
        rec = {"kimg": s.kimg, "cur_nimg": s.cur_nimg, "step": s.step, self.metric: value}
        st.history.append(rec)
        improved = math.isfinite(value) and (st.best is None or value < st.best[self.metric])
        if improved:
            st.best, st.since_best = dict(rec), 0
            sd = {k: v.detach().cpu().contiguous() for k, v in s.G_ema.state_dict().items()}
            with atomic_path(stage.root / BEST_FILE) as tmp:
                save_safetensors(sd, str(tmp))
        else:
            st.since_best += 1
        best = st.best
        msg = (f"[degan] {stage.root.name} kimg {s.kimg:.1f}: {self.metric} {value:.4g}"
               + (" (new best)" if improved else
                  f" (best {best[self.metric]:.4g} at kimg {best['kimg']:.1f}; {st.since_best} check(s) without "
                  "a new best)" if best else ""))
        if self.patience is not None and st.since_best >= self.patience and s.cur_nimg < trainer.total_nimg:
            st.stopped_at_nimg = s.cur_nimg
            trainer.total_nimg = s.cur_nimg
            msg += f"; early stop (--early-stop {self.patience}); the best G_ema is {BEST_FILE}"
        self.ctx.exp.log(msg)
        self._write()

    def _write(self) -> None:
        st = self.state
        write_json(self.ctx.stage.root / BEST_JSON, {
            "metric": self.metric, "every_kimg": self.every_nimg / 1000, "patience": self.patience,
            "best": st.best, "checks_since_best": st.since_best,
            "early_stopped_at_kimg": None if st.stopped_at_nimg is None else st.stopped_at_nimg / 1000,
            "history": st.history, "file": BEST_FILE if st.best else None})


class BestTechnique(Technique):
    """The best-snapshot check and early stopping as a stage technique (callback + checkpointed state)."""

    name, callback_order = "best", ORDER

    def __init__(self, ctx: StageContext) -> None:
        self.ctx, self.best = ctx, BestState()

    def setup(self, state) -> None:
        state.extras["best"] = self.best

    def callbacks(self, state) -> list:
        ev = self.ctx.cfg.eval
        return [BestSnapshot(self.ctx, self.best, ev.best_every_kimg, ev.best_metric, ev.early_stop)]

    def summary(self, state) -> dict:
        b = self.best
        out = {"best": None if b.best is None else {"metric": self.ctx.cfg.eval.best_metric,
                                                     "value": b.best[self.ctx.cfg.eval.best_metric],
                                                     "kimg": b.best["kimg"], "file": BEST_FILE}}
        if b.stopped_at_nimg is not None:
            out["early_stopped_at_kimg"] = b.stopped_at_nimg / 1000
        return out


@register_technique("best")
def _best(ctx: StageContext):
    return BestTechnique(ctx) if ctx.cfg.eval.best_every_kimg is not None else None


def load_best_generator(stage_dir, device="cpu"):
    """The best G_ema of a finished stage (``G_ema_best.safetensors``), in eval mode.

    Raises:
        CheckpointError: the stage has no best snapshot (the check was off) or is not finished.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    from ..errors import CheckpointError
    from ..export import load_stage_generator

    path = Path(stage_dir) / BEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; the best-snapshot check was off for this stage (train with "
                              "--best-every KIMG)")
    G = load_stage_generator(stage_dir, device)
    G.load_state_dict({k: v.to(device) for k, v in load_file(str(path)).items()}, strict=True)
    return G.eval()
