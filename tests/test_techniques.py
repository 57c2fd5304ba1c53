"""The technique interface: built-ins are registered and ordered, a new technique is one module + one registration
and reaches every hook of a stage (state, callbacks, objective, summary), with its state checkpointed."""

import json

import pytest
import torch
from conftest import random_image_folder

import degan.lottery.techniques  # noqa: F401  (registers the built-ins)
from degan.config import resolve
from degan.lottery.layout import StageLayout
from degan.train.technique import (TECHNIQUES, StageContext, Technique, build_techniques, make_stage_state,
                                   register_technique, wrap_objective)


class _Exp:
    def __init__(self, cfg):
        self.cfg, self.device, self.force = cfg, torch.device("cpu"), False


def _ctx(tmp_path, role="train", **sections):
    cfg = resolve("dcgan", overrides=sections)
    return StageContext(_Exp(cfg), StageLayout(tmp_path / "level_0"), augment=None, role=role)


def test_builtin_techniques_are_registered_and_enabled_by_config(tmp_path):
    assert {"ada", "advaug", "dynamic", "kd", "lecam", "monitor", "precision", "r1", "rewind",
            "tensorboard"} <= set(TECHNIQUES.names())
    names = [t.name for t in build_techniques(_ctx(tmp_path))]
    assert names == ["monitor", "precision"]  # defaults: the D monitor and fp32 precision
    on = build_techniques(_ctx(tmp_path, lecam={"enabled": True}, r1={"gamma": 1.0}, advaug={"enabled": True},
                               eval={"tensorboard": True}))
    assert [t.name for t in on] == ["advaug", "lecam", "r1", "monitor", "tensorboard", "precision"]
    assert [t.order for t in on] == sorted(t.order for t in on)
    # late rewinding is a level-0 technique of ticket runs only
    assert "rewind" in [t.name for t in build_techniques(_ctx(tmp_path, role="level", prune={"rewind": "5%"}))]
    assert "rewind" not in [t.name for t in build_techniques(_ctx(tmp_path, role="train", prune={"rewind": "5%"}))]


def test_state_builder_must_be_unique_and_wrappers_apply_by_order(tmp_path):
    class A(Technique):
        name, order = "a", 20

        def make_state(self, G, D, opt_kw):
            return "state-a"

        def wrap(self, objective, state):
            return objective + ["a"]

    class B(Technique):
        name, order = "b", 10

        def wrap(self, objective, state):
            return objective + ["b"]

    assert make_stage_state([A(), B()], None, None, {}, default=lambda G, D: "default") == "state-a"
    assert make_stage_state([B()], None, None, {}, default=lambda G, D: "default") == "default"
    with pytest.raises(ValueError, match="only one technique"):
        make_stage_state([A(), A()], None, None, {}, default=lambda G, D: "default")
    assert wrap_objective([A(), B()], [], None) == ["b", "a"]  # lowest order innermost
    with pytest.raises(ValueError, match="enabled twice"):
        build_techniques(_ctx(tmp_path), extra=[type("P", (Technique,), {"name": "precision"})()])


class _Counter:
    def __init__(self):
        self.n = 0

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, d):
        self.n = int(d["n"])


class _CountSteps(Technique):
    """A new technique: counts G steps (checkpointed), adds 0 * loss (a wrapper that sees every D step)."""

    name, order, callback_order = "count_steps", 25, 45
    calls: list = []

    def __init__(self):
        self.counter, self.d_steps = _Counter(), 0

    def setup(self, state):
        state.extras["count_steps"] = self.counter

    def callbacks(self, state):
        tech = self

        class CB:
            def on_train_start(self, trainer):
                pass

            def on_step_end(self, trainer, stats):
                tech.counter.n += 1

            def on_train_end(self, trainer):
                pass

        return [CB()]

    def wrap(self, objective, state):
        from degan.losses import ObjectiveWrapper

        tech = self

        class W(ObjectiveWrapper):
            def d_loss(self, *a, **kw):
                tech.d_steps += 1
                return self.objective.d_loss(*a, **kw)
        return W(objective)

    def summary(self, state):
        _CountSteps.calls.append(self)
        return {"count_steps": {"callback_steps": self.counter.n, "d_steps": self.d_steps}}


def test_a_new_technique_reaches_every_hook_and_is_checkpointed(tmp_path):
    from degan.lottery import run_train

    d = random_image_folder(tmp_path / "imgs", 12)
    register_technique("count_steps")(lambda ctx: _CountSteps())
    try:
        cfg = resolve("dcgan", overrides={"data": {"source": str(d), "resolution": 16}, "model": {"width": 0.25},
                                          "train": {"total_kimg": 0.064, "batch_D": 8, "batch_G": 8,
                                                    "snap_kimg": 0.032},
                                          "eval": {"metrics": "none", "monitor_every_kimg": None}})
        run = run_train(cfg, tmp_path / "runs", progress=False, log=lambda m: None)
    finally:
        TECHNIQUES._entries.pop("count_steps", None)
    done = json.loads((run.level(0).done).read_text())
    assert done["count_steps"] == {"callback_steps": 8, "d_steps": 8}  # 64 images / batch 8 = 8 iterations
    ckpt = sorted((run.level(0).checkpoints).glob("ckpt-*.pt"))[-1]
    saved = torch.load(ckpt, weights_only=True)["state"]
    assert saved["extras"]["count_steps"] == {"n": 8}
