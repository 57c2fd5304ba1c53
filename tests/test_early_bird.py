"""Early-bird tickets (You et al. 2020; SPEC §10): mask distance, the draw rule, resume, and the ticket command."""

import pytest
import torch

import degan.lottery.early_bird as eb


def masks(*bits):
    return {"G": {"conv": torch.tensor(bits, dtype=torch.float32)}}


def test_mask_distance_is_the_fraction_of_entries_that_differ():
    a = {"G": {"a": torch.tensor([1.0, 1, 0, 0])}, "D": {"b": torch.tensor([[1.0, 0], [1, 1]])}}
    b = {"G": {"a": torch.tensor([1.0, 0, 0, 1])}, "D": {"b": torch.tensor([[1.0, 0], [1, 0]])}}
    assert eb.mask_distance(a, a) == 0.0 and eb.mask_distance(a, b) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="different networks"):
        eb.mask_distance(a, {"G": a["G"]})
    with pytest.raises(ValueError, match="shapes"):
        eb.mask_distance(a, {"G": {"a": torch.ones(3)}, "D": a["D"]})


class Log:
    def __init__(self):
        self.lines = []

    def __call__(self, msg):
        self.lines.append(msg)


class Ctx:
    def __init__(self, tmp_path):
        self.exp = type("E", (), {"log": Log()})()
        self.stage = type("S", (), {"root": tmp_path})()


class Trainer:
    def __init__(self):
        self.total_nimg = 1000
        self.state = type("TS", (), {"cur_nimg": 0, "step": 0, "kimg": 0.0})()

    def advance(self, n):
        self.state.cur_nimg += n
        self.state.step += 1
        self.state.kimg = self.state.cur_nimg / 1000


def test_the_ticket_is_drawn_when_the_last_window_of_distances_is_below_eps(tmp_path):
    # masks of 10 entries: distances 0.5, 0.3, 0.0, 0.0 -> with window 2 and eps 0.1 the draw is at the 5th check
    seq = iter([masks(1, 1, 1, 1, 1, 0, 0, 0, 0, 0), masks(1, 1, 0, 0, 0, 1, 1, 0, 0, 0),
                masks(1, 1, 1, 0, 0, 1, 0, 0, 0, 0), masks(1, 1, 1, 0, 0, 1, 0, 0, 0, 0),
                masks(1, 1, 1, 0, 0, 1, 0, 0, 0, 0), masks(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)])
    state = eb.EarlyBirdState()
    ctx = Ctx(tmp_path)
    cb = eb.EarlyBird(ctx, state, lambda s: next(seq), every_kimg=0.01, eps=0.1, window=2)
    tr = Trainer()
    cb.on_train_start(tr)
    while tr.state.cur_nimg < tr.total_nimg:
        tr.advance(10)
        cb.on_step_end(tr, {})
    assert [round(h.get("distance", -1), 3) for h in state.history] == [-1, 0.5, 0.2, 0.0, 0.0]
    assert state.drawn_at_nimg == 50 and tr.total_nimg == 50
    assert "early-bird ticket drawn at kimg 0.1" in ctx.exp.log.lines[-1]
    # the state survives a checkpoint (plain values + tensors) and a resumed level stops at the draw again
    again = eb.EarlyBirdState()
    again.load_state_dict(state.state_dict())
    tr2 = Trainer()
    tr2.state.cur_nimg = 50
    eb.EarlyBird(ctx, again, None, every_kimg=0.01, eps=0.1, window=2).on_train_start(tr2)
    assert tr2.total_nimg == 50
    info = (tmp_path / "early_bird.json").read_text()
    assert '"drawn_at_kimg": 0.05' in info


def _draw(tmp_path, seq, eps):
    state, ctx, tr = eb.EarlyBirdState(), Ctx(tmp_path), Trainer()
    cb = eb.EarlyBird(ctx, state, lambda s: next(seq), every_kimg=0.01, eps=eps, window=2)
    cb.on_train_start(tr)
    while tr.state.cur_nimg < tr.total_nimg:
        tr.advance(10)
        cb.on_step_end(tr, {})
    return state, ctx.exp.log.lines


def test_a_draw_at_the_first_possible_check_far_below_eps_warns(tmp_path):
    """Distances 0.2, 0.2 with eps 0.5: drawn at the first check that can draw, both below eps / 2 -> a warning that
    the threshold, not the masks, decided; with eps 0.3 (distances not far below it) the same draw, no warning."""
    seq = [masks(1, 1, 1, 1, 1, 0, 0, 0, 0, 0), masks(1, 1, 1, 1, 0, 1, 0, 0, 0, 0),
           masks(1, 1, 1, 0, 1, 1, 0, 0, 0, 0)]
    state, lines = _draw(tmp_path, iter(seq + [None]), eps=0.5)
    assert state.drawn_at_nimg == 30
    assert "first possible check" in lines[-1] and "prune.eb_eps=0.5" in lines[-1]
    state, lines = _draw(tmp_path, iter(seq + [None]), eps=0.3)
    assert state.drawn_at_nimg == 30 and not any("first possible check" in x for x in lines)


def test_one_shot_early_bird_trains_only_the_dense_and_the_last_level():
    from degan.config import resolve, set_dotted

    cfg = resolve(preset="dcgan", overrides={"prune": {"levels": 5, "method": "omp", "early_bird": True}})
    assert eb.early_bird_levels(cfg) == [0, 5]
    assert eb.early_bird_levels(set_dotted(cfg, "prune.method", "imp_global")) == [0, 1, 2, 3, 4, 5]
    assert eb.early_bird_levels(set_dotted(cfg, "prune.early_bird", False)) == [0, 1, 2, 3, 4, 5]


TINY = ["--model", "dcgan", "--width", "0.25", "--resolution", "16", "--batch", "8", "--snap", "0.032",
        "--metrics", "none", "--no-progress", "--threads", "1", "--set", "eval.monitor_every_kimg=null"]


@pytest.mark.parametrize("method, trained", [("imp_global", [0, 1, 2]), ("omp", [0, 2])])
def test_ticket_early_bird_stops_pruned_levels_at_the_draw(tmp_path, method, trained):
    import json

    from click.testing import CliRunner

    from degan.cli import main

    # a huge eps draws at the first possible check: window 2 -> 3 checks of 0.008 kimg (3 iterations of 8)
    res = CliRunner().invoke(main, ["ticket", "--data", "faces100", "--outdir", str(tmp_path), *TINY, "--kimg", "0.2",
                                    "--levels", "2", "--method", method, "--early-bird", "--set",
                                    "prune.eb_every_kimg=0.008", "--set", "prune.eb_eps=0.99", "--set",
                                    "prune.eb_window=2"])
    assert res.exit_code == 0, res.output
    run = next(tmp_path.glob("ticket-*"))
    done = {int(p.parent.name.split("_")[1]): json.loads(p.read_text()) for p in run.glob("level_*/done.json")}
    assert sorted(done) == trained
    for k in trained[:-1]:  # pruned levels stop at the draw (3rd check = 24 images), the last one trains in full
        assert done[k]["real_images_shown"] == 24 and done[k]["early_bird"]["drawn_at_kimg"] == 0.024
        assert json.loads((run / f"level_{k}" / "early_bird.json").read_text())["drawn_at_kimg"] == 0.024
    assert done[trained[-1]]["real_images_shown"] == 200 and "early_bird" not in done[trained[-1]]
    assert done[2]["density_G"] == pytest.approx(0.64, abs=0.01)  # the last level has the 2-level density
    assert "early-bird ticket drawn at kimg 0.0" in res.output


def test_early_bird_refuses_random_pruning(tmp_path):
    from click.testing import CliRunner

    from degan.cli import main

    res = CliRunner().invoke(main, ["ticket", "--data", "faces100", "--outdir", str(tmp_path), *TINY, "--method",
                                    "random", "--early-bird"])
    assert res.exit_code == 2 and "needs a magnitude method" in res.output


@pytest.mark.parametrize("method, source", [("imp_global", {1: 0, 2: 1}), ("omp", {2: 0})])
def test_rewind_draw_starts_each_level_from_the_weights_its_mask_was_drawn_from(tmp_path, monkeypatch, method, source):
    from click.testing import CliRunner

    import degan.lottery.runner as runner
    from degan.cli import main
    from degan.lottery.experiment import final_state
    from degan.lottery.layout import RunLayout

    starts, real = {}, runner.run_stage

    def spy(exp, stage, start, masks, **kw):
        starts[stage.level] = {n: {k: v.clone() for k, v in start[n].items()} for n in ("G", "D")}
        return real(exp, stage, start, masks, **kw)

    monkeypatch.setattr(runner, "run_stage", spy)
    res = CliRunner().invoke(main, ["ticket", "--data", "faces100", "--outdir", str(tmp_path), *TINY, "--kimg", "0.2",
                                    "--levels", "2", "--method", method, "--early-bird", "--rewind", "draw", "--set",
                                    "prune.eb_every_kimg=0.008", "--set", "prune.eb_eps=0.99", "--set",
                                    "prune.eb_window=2"])
    assert res.exit_code == 0, res.output
    run = RunLayout(next(tmp_path.glob("ticket-*")))
    assert sorted(starts) == [0, *source]
    for level, src in source.items():
        drawn = final_state(run.level(src))
        for net in ("G", "D"):
            for key, w in starts[level][net].items():
                if key.endswith("weight_orig") or key.endswith(".weight"):
                    torch.testing.assert_close(w, drawn[net][key])
        # and not theta_0: the dense level trained before the draw
        moved = [k for k, w in starts[level]["G"].items() if w.is_floating_point()
                 and not torch.equal(w, starts[0]["G"][k])]
        assert moved, "the level started from theta_0, not from the draw"


def test_rewind_draw_needs_early_bird(tmp_path):
    from click.testing import CliRunner

    from degan.cli import main
    from degan.config import parse_rewind

    assert parse_rewind("draw") == ("draw", 0.0)
    res = CliRunner().invoke(main, ["ticket", "--data", "faces100", "--outdir", str(tmp_path), *TINY, "--levels", "1",
                                    "--rewind", "draw"])
    assert res.exit_code == 2 and "needs --early-bird" in res.output
    assert not list(tmp_path.iterdir())  # refused before a run folder was written
