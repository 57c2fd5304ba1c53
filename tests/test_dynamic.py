"""RG-GAN dynamic pruning: step estimator, threshold gradients, frozen weights, regeneration, trigger, training."""

import copy
import math

import pytest
import torch
from torch import nn

from degan.errors import ConfigError, DataError
from degan.fileio import read_jsonl
from degan.losses import GANObjective
from degan.models import create_model
from degan.pruning.dynamic import (
    DynamicMask,
    add_dynamic_masks,
    check_layers,
    collapse_guard,
    dynamic_density,
    dynamic_layers,
    is_dense,
    param_groups,
    set_dense,
    sparsity_regularizer,
    step_grad,
    threshold_parameters,
    weight_parameters,
)
from degan.pruning.mask import add_masks, enforce_masks, raw_weight
from degan.report.dynamic import metric_label, plot_density, plot_fid_regen
from degan.train import StatsLogger, Trainer
from degan.train.regen import (
    DynamicPruning,
    DynamicPruningObjective,
    RegenTrigger,
    dense_state_dict,
    make_dynamic_state,
    sparse_state_dict,
)


def linear_net(threshold_grad="ste", seed=0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    return add_dynamic_masks(net, threshold_grad=threshold_grad)


def dcgan_pair(seed=0, threshold_grad="ste"):
    torch.manual_seed(seed)
    return create_model("dcgan", resolution=16, img_channels=3, width=0.125, z_dim=16,
                        pre_sn_hook=lambda n: add_dynamic_masks(n, threshold_grad=threshold_grad))


def images(n=24):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


# ---------------------------------------------------------------------------------------------- estimator, gradients


def test_step_grad_values():
    x = torch.tensor([0.0, 0.2, 0.4, 0.5, 1.0, 1.5, -0.2, -0.4, -0.5, -1.0, -1.5, 0.1, -0.3])
    expected = [2.0, 1.2, 0.4, 0.4, 0.4, 0.0, 1.2, 0.4, 0.4, 0.4, 0.0, 1.6, 0.8]
    assert step_grad(x).tolist() == pytest.approx(expected)


def test_ste_gradients_match_the_formula():
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -0.05, 0.2], [-0.9, 0.3, 0.02]]))
    add_dynamic_masks(layer)
    dm = layer.parametrizations.weight[0]
    with torch.no_grad():
        dm.threshold.copy_(torch.tensor([0.1, 0.25]))
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -1.0, 3.0]])
    layer(x).pow(2).sum().backward()

    W = raw_weight(layer).detach()
    t = torch.tensor([0.1, 0.25])[:, None]
    M = (W.abs() - t > 0).float()
    assert M.tolist() == [[1, 0, 1], [1, 1, 0]]
    out = x @ (W * M).T
    g = (2 * out).T @ x  # dL/d(W*M)
    h = step_grad(W.abs() - t)
    assert dm.threshold.grad.tolist() == pytest.approx((-(g * W * h).sum(1)).tolist(), rel=1e-5)
    grad_w = raw_weight(layer).grad
    assert torch.allclose(grad_w, M * g * (1 + W.abs() * h), rtol=1e-5)
    assert (grad_w[M == 0] == 0).all()  # the weight gradient is masked


def test_regularizer_only_mode_gives_thresholds_no_loss_gradient():
    net = linear_net("regularizer_only")
    with torch.no_grad():
        for t in threshold_parameters(net):
            t.fill_(0.2)
    net(torch.randn(4, 6)).sum().backward()
    assert all(t.grad is None for t in threshold_parameters(net))
    for _, module, dm in dynamic_layers(net):
        assert (raw_weight(module).grad[~dm.sparse_mask()] == 0).all()
    lam = 1e-3
    sparsity_regularizer(net, lam).backward()
    for t in threshold_parameters(net):
        assert t.grad.tolist() == pytest.approx((-lam * torch.exp(-t.detach())).tolist())
    ste = linear_net("ste")
    ste(torch.randn(4, 6)).sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in threshold_parameters(ste))


def test_regularizer_value_and_errors():
    net = linear_net()
    assert sparsity_regularizer(net, 2.0).item() == pytest.approx(2.0 * (5 + 3))  # exp(0) per output channel
    assert sparsity_regularizer(net, 0.0).item() == 0.0
    with pytest.raises(ValueError, match="lambda"):
        sparsity_regularizer(net, -1e-12)


def test_conv_transpose_thresholds_are_per_output_channel():
    conv = add_dynamic_masks(nn.ConvTranspose2d(4, 6, 3), prunable="convT")
    dm = conv.parametrizations.weight[0]
    assert dm.threshold.shape == (6,) and raw_weight(conv).shape == (4, 6, 3, 3)
    with torch.no_grad():
        dm.threshold[2] = 10.0
    mask = dm.current_mask()
    assert not mask[:, 2].any() and mask[:, [0, 1, 3, 4, 5]].all()
    assert (conv.weight[:, 2] == 0).all()


def test_registration_rules():
    net = add_masks(nn.Sequential(nn.Conv2d(3, 4, 3)), "conv")
    with pytest.raises(ValueError, match="already parametrized"):
        add_dynamic_masks(net)
    net = linear_net()
    add_dynamic_masks(net)  # idempotent
    assert len(list(dynamic_layers(net))) == 2
    assert check_layers(net, ["0", "2.weight"]) == ["0.weight", "2.weight"]
    with pytest.raises(ConfigError, match="no dynamically masked layer named 'blocks.9'.*0, 2"):
        check_layers(net, ["blocks.9"])
    with pytest.raises(ValueError, match="threshold_grad"):
        DynamicMask((3, 3), threshold_grad="straight")


def test_param_groups():
    net = linear_net()
    groups = param_groups(net, 2e-4)
    assert [g["name"] for g in groups] == ["weights", "thresholds"]
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lr"] == 2e-4
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in threshold_parameters(net)}
    assert len(weight_parameters(net)) + len(threshold_parameters(net)) == len(list(net.parameters()))
    groups = param_groups(net, 2e-4, 1e-3, threshold_eps=1e-15)
    assert groups[1]["lr"] == 1e-3 and groups[1]["eps"] == 1e-15
    torch.optim.Adam(groups, lr=2e-4)


# ---------------------------------------------------------------------------------------------- frozen, regeneration


def _adam_steps(net, opt, n, hook=True):
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        net(torch.randn(8, 6)).pow(2).mean().backward()
        opt.step()
        if hook:
            enforce_masks(net)


@pytest.mark.parametrize("hook", [True, False])
def test_pruned_weights_are_frozen_and_come_back(hook):
    net = linear_net("regularizer_only")
    with torch.no_grad():
        for t in threshold_parameters(net):
            t.fill_(-1.0)  # everything kept: Adam builds momentum on every weight
    # beta1 > 0: with beta1 = 0 (the SNGAN setting) a zero gradient already means a zero Adam step
    opt = torch.optim.Adam(param_groups(net, 0.05), lr=0.05, betas=(0.5, 0.9))
    _adam_steps(net, opt, 3)
    layer = net[0]
    W0 = raw_weight(layer).detach().clone()
    with torch.no_grad():
        layer.parametrizations.weight[0].threshold.fill_(float(W0.abs().median()))
    pruned = ~layer.parametrizations.weight[0].sparse_mask()
    assert 0 < pruned.sum() < pruned.numel()
    _adam_steps(net, opt, 4, hook=hook)
    W1 = raw_weight(layer).detach()
    if not hook:  # the test is meaningful: without the hook Adam's momentum moves pruned weights
        assert not torch.equal(W1[pruned], W0[pruned])
        return
    assert torch.equal(W1[pruned], W0[pruned])  # frozen, bit for bit
    assert not torch.equal(W1[~pruned], W0[~pruned])  # kept weights train
    assert (layer.weight[pruned] == 0).all()
    with torch.no_grad():  # the threshold drops: the pruned weights regrow with their stored values
        layer.parametrizations.weight[0].threshold.fill_(0.0)
    assert torch.equal(layer.weight[pruned], W0[pruned])


def test_dense_phase_restores_exactly_the_stored_weights():
    net = linear_net("ste")
    with torch.no_grad():
        for t in threshold_parameters(net):
            t.fill_(0.2)
    raw = [raw_weight(m).detach().clone() for _, m, _ in dynamic_layers(net)]
    masks = [dm.current_mask() for _, _, dm in dynamic_layers(net)]
    assert any((~m).any() for m in masks)
    set_dense(net, True)
    assert is_dense(net) and dynamic_density(net)["density"] == 1.0
    for (_, module, dm), w in zip(dynamic_layers(net), raw):
        assert torch.equal(module.weight, w) and dm.current_mask().all() and dm.kept_fraction() == 1.0
    net(torch.randn(2, 6)).sum().backward()
    assert all(t.grad is None for t in threshold_parameters(net))  # thresholds not trained in the dense phase
    set_dense(net, False)
    for (_, _, dm), m in zip(dynamic_layers(net), masks):
        assert torch.equal(dm.current_mask(), m)


def test_load_state_dict_refreshes_the_frozen_copy():
    net = linear_net("regularizer_only")
    opt = torch.optim.Adam(param_groups(net, 0.05), lr=0.05)
    net(torch.randn(2, 6)).sum().backward()  # arms the pre-step copy with the current weights
    other = linear_net("regularizer_only", seed=5)
    with torch.no_grad():
        for t in threshold_parameters(other):
            t.fill_(0.3)
    net.load_state_dict(other.state_dict())
    pruned = ~net[0].parametrizations.weight[0].sparse_mask()  # the mask of the step below
    opt.zero_grad(set_to_none=True)
    net(torch.randn(2, 6)).sum().backward()
    opt.step()
    enforce_masks(net)
    layer, ref = net[0], other[0]
    assert pruned.any()
    assert torch.equal(raw_weight(layer)[pruned], raw_weight(ref)[pruned])  # the loaded values, not the old ones


def test_mask_cache_follows_in_place_changes():
    net = linear_net()
    _, layer, dm = next(dynamic_layers(net))
    assert dm.current_mask().all()
    with torch.no_grad():
        raw_weight(layer)[0].zero_()  # in place: the version counter moves, the cached mask is recomputed
    assert not dm.current_mask()[0].any() and (layer.weight[0] == 0).all()
    with torch.no_grad():
        dm.threshold.fill_(-1.0)
    assert dm.current_mask().all()
    raw_weight(layer).data.fill_(0.5)  # .data bypasses the version counter: disarm() drops the caches
    dm.threshold.data.fill_(0.7)
    dm.disarm()
    assert not dm.current_mask().any()


def test_collapse_guard_fires_at_one_percent():
    layer = nn.Linear(100, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.linspace(0.01, 1.0, 100)[None])
    add_dynamic_masks(layer)
    dm = layer.parametrizations.weight[0]
    with torch.no_grad():
        dm.threshold.fill_(0.985)  # 2 weights (0.99, 1.0) above: 2 % kept
    assert dm.kept_fraction() == pytest.approx(0.02)
    assert collapse_guard(layer) == []
    with torch.no_grad():
        dm.threshold.fill_(0.995)  # 1 % kept
    assert collapse_guard(layer, 0.01) == ["weight"]
    assert dm.threshold.item() == 0.0 and dm.kept_fraction() == 1.0
    with pytest.raises(ValueError, match="min_keep"):
        collapse_guard(layer, 1.0)


def test_density_bookkeeping_matches_the_masks():
    G, D = dcgan_pair()
    for net in (G, D):
        with torch.no_grad():
            for t in threshold_parameters(net):
                t.uniform_(0.0, 0.03)
    d = dynamic_density(G)
    kept = total = 0
    for name, module, dm in dynamic_layers(G):
        m = raw_weight(module).abs() > dm.threshold.view(dm.view_shape)
        assert d["layers"][name]["kept"] == int(m.sum()) == int((module.weight != 0).sum())
        assert dm.kept_fraction() == pytest.approx(m.float().mean().item())
        kept, total = kept + int(m.sum()), total + m.numel()
    assert d["density"] == pytest.approx(kept / total) and 0 < d["density"] < 1
    thr = torch.cat([t.detach() for t in threshold_parameters(G)])
    assert d["threshold"]["mean"] == pytest.approx(thr.mean().item())
    assert d["threshold"]["max"] == pytest.approx(thr.max().item())


def test_spectral_norm_normalises_the_masked_weight():
    _, D = dcgan_pair()
    conv = D.blocks[2]
    dm = conv.parametrizations.weight[0]
    with torch.no_grad():
        dm.threshold.fill_(float(raw_weight(conv).abs().median()))
    assert 0.4 < dm.kept_fraction() < 0.6
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        for _ in range(60):  # power iterations run in training-mode forward passes
            D(x)
    D.eval()
    w = conv.weight.detach()
    assert (w[~dm.sparse_mask()] == 0).all()
    sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()
    assert sigma == pytest.approx(1.0, abs=1e-2)


# ---------------------------------------------------------------------------------------------- trigger


def feed(trigger, fids):
    return [trigger.update(f) for f in fids]


def test_trigger_paper_mode():
    t = RegenTrigger("paper")
    assert feed(t, [10, 10, 10, 10, 12]) == ["none"] * 5  # fewer than 5 previous FIDs
    t = RegenTrigger("paper")
    out = feed(t, [10, 10, 10, 10, 10, 11, 10.5, 10.1, 10.0])
    # 11 > mean(10 x5) -> regenerate; 10.5 > mean(10,10,10,10,11)=10.2 -> stay dense;
    # 10.1 <= mean(10,10,10,11,10.5)=10.3 -> resume pruning; 10.0 <= 10.32 -> none
    assert out == ["none"] * 5 + ["regenerate", "none", "resume_pruning", "none"]
    t = RegenTrigger("paper")
    assert feed(t, [10, 10, 10, 10, 10, 10]) == ["none"] * 6  # equal is not worse
    t = RegenTrigger("paper")
    assert set(feed(t, [50, 40, 30, 25, 20, 18, 15, 14, 13])) == {"none"}  # steady improvement


def test_trigger_reference_mode():
    t = RegenTrigger("reference")
    out = feed(t, [10, 10, 10, 10, 11, 10.0, 12])
    # 5th: avg 0.1*10+0.1*10+0.2*10+0.2*10+0.4*11 = 10.4 < 11 -> regenerate
    # 6th: avg 1+1+2+2.2+4 = 10.2 >= 10 -> resume; 7th: avg 1+1+2.2+2+4.8 = 11.0 < 12 -> regenerate
    assert out == ["none"] * 4 + ["regenerate", "resume_pruning", "regenerate"]
    assert t.last_average == pytest.approx(11.0) and t.dense
    sd = t.state_dict()
    u = RegenTrigger("reference")
    u.load_state_dict(sd)
    assert u.history == t.history and u.dense
    with pytest.raises(ValueError, match="mode='reference'"):
        RegenTrigger("paper").load_state_dict(sd)
    with pytest.raises(ValueError, match="finite"):
        t.update(float("nan"))
    with pytest.raises(ValueError, match="paper, reference"):
        RegenTrigger("mean")


# ---------------------------------------------------------------------------------------------- training


def test_objective_adds_regulariser_only_while_pruning():
    G, D = dcgan_pair()
    G.eval(), D.eval()  # no power iteration / BN-stat updates between the compared calls
    obj = DynamicPruningObjective(GANObjective("hinge"), lam=1e-3)
    real, z = torch.rand(4, 3, 16, 16) * 2 - 1, torch.randn(4, 16)
    base_loss, _ = GANObjective("hinge").d_loss(G, D, real, z)
    loss, stats = obj.d_loss(G, D, real, z)
    assert loss.item() == pytest.approx(base_loss.item() + sparsity_regularizer(D, 1e-3).item(), rel=1e-6)
    assert stats["reg_D"] == pytest.approx(1e-3 * sum(t.numel() for t in threshold_parameters(D)))
    set_dense(D, True)
    loss, stats = obj.d_loss(G, D, real, z)
    assert "reg_D" not in stats and loss.item() == pytest.approx(base_loss.item(), rel=1e-6)
    assert obj.loss.name == "hinge"  # the wrapped objective's attributes show through


def test_regeneration_needs_a_metric():
    with pytest.raises(ValueError, match="regeneration without a metric configured"):
        DynamicPruning(regen_every_kimg=10)


class PhaseProbe:
    def __init__(self):
        self.phases = []

    def on_train_start(self, trainer):
        pass

    def on_step_end(self, trainer, stats):
        s = trainer.state
        self.phases.append((is_dense(s.G), is_dense(s.D), is_dense(s.G_ema)))

    def on_train_end(self, trainer):
        pass


def test_trainer_with_dynamic_masks(tmp_path):
    G, D = dcgan_pair()
    state = make_dynamic_state(G, D, lr_G=2e-3, lr_D=2e-3, betas=(0.0, 0.9), seed=3)
    assert [g["name"] for g in state.opt_G.param_groups] == ["weights", "thresholds"]
    fids = iter([10, 10, 10, 10, 20, 5, 6, 7, 8])
    evaluated = []

    def evaluate(G_ema):
        evaluated.append(G_ema)
        return next(fids)

    log = tmp_path / "dynamic.jsonl"
    lines = []
    dyn = DynamicPruning(lam=5e-4, regen_every_kimg=0.016, trigger="reference", evaluate=evaluate, log_path=log,
                         log_kimg=0.016, metric="kid_train", log=lines.append)
    probe = PhaseProbe()
    stats_path = tmp_path / "stats.jsonl"
    trainer = Trainer(state, images(), dyn.wrap(GANObjective("hinge")), total_kimg=0.112, batch_D=8, batch_G=8,
                      n_dis=1, ema_decay=0.9, callbacks=[dyn, probe, StatsLogger(stats_path, 0.032)])
    trainer.run()
    assert state.step == 14 and all(e is state.G_ema for e in evaluated) and len(evaluated) == 7
    assert [e["event"] for e in dyn.events if e["event"] != "collapse_guard"] == ["regenerate", "resume_pruning"]
    regen = next(e for e in dyn.events if e["event"] == "regenerate")
    assert regen["fid"] == 20 and regen["previous_fids"] == [10, 10, 10, 10] and regen["cur_nimg"] == 80
    # dense from the 5th evaluation (step 10) to the 6th (step 12), for G, D and G_ema together
    assert probe.phases[8] == (False, False, False) and probe.phases[9] == (True, True, True)
    assert probe.phases[10] == (True, True, True) and probe.phases[11] == (False, False, False)
    for net in (state.G, state.D, state.G_ema):
        for p in net.parameters():
            assert torch.isfinite(p).all()
    rows = read_jsonl(stats_path)
    assert rows and all(0 < r["density_G"] <= 1 and 0 < r["density_D"] <= 1 for r in rows)
    assert all(math.isfinite(r["thr_mean_G"]) and "reg_D" in r and "reg_G" in r for r in rows)
    records = read_jsonl(log)
    kinds = [r["kind"] for r in records]
    assert kinds[0] == "config" and kinds.count("fid") == 7 and kinds.count("density") >= 8
    assert records[0]["optimizer_G"][1]["name"] == "thresholds"
    dens = [r for r in records if r["kind"] == "density"]
    assert set(dens[-1]["G"]["layers"]) == {n for n, _, _ in dynamic_layers(state.G)}

    # plots and their CSVs
    png, csv = plot_density(log, tmp_path / "density.png")
    assert png.stat().st_size > 0 and csv.read_text().startswith("kimg,cur_nimg,phase,net,layer,density")
    png, csv = plot_fid_regen(log, tmp_path / "fid.png")
    assert png.stat().st_size > 0 and len(csv.read_text().splitlines()) == 8
    assert csv.read_text().splitlines()[1].endswith(",kid_train")  # the plot is labelled with the metric used
    assert metric_label("kid_train") == "KID (train)" and metric_label("fid") == "FID"
    # one console line per regeneration check, naming the metric and the decision
    assert len(lines) == 7 and all(ln.startswith("[degan] RG-GAN check at kimg") and "kid_train" in ln for ln in lines)
    assert sum("-> regenerate" in ln for ln in lines) == 1 and sum("-> resume_pruning" in ln for ln in lines) == 1
    with pytest.raises(DataError, match="no FID records"):
        plot_fid_regen(tmp_path / "stats.jsonl", tmp_path / "x.png")

    # resume: state_dict round trip, and rebuilding from the log at an earlier checkpoint
    sd = dyn.state_dict()
    other = DynamicPruning(regen_every_kimg=0.016, trigger="reference", evaluate=evaluate)
    other.load_state_dict(sd)
    assert other.trigger.history == dyn.trigger.history and other.events == dyn.events
    earlier = copy.copy(trainer)
    earlier.state = copy.copy(state)
    earlier.state.cur_nimg = 88  # a checkpoint in the dense phase: after the 5th FID (80 imgs), before the 6th
    replay = DynamicPruning(regen_every_kimg=0.016, trigger="reference", evaluate=evaluate, log_path=log)
    replay.on_train_start(earlier)
    assert replay.trigger.history == [10, 10, 10, 10, 20] and replay.dense and is_dense(state.G_ema)
    assert max(r["cur_nimg"] for r in read_jsonl(log)) <= 88


def test_sparse_and_dense_exports_load_into_plain_networks():
    G, D = dcgan_pair()
    for net in (G, D):
        with torch.no_grad():
            for t in threshold_parameters(net):
                t.fill_(0.02)
    x, z = torch.randn(2, 3, 16, 16), torch.randn(2, 16)
    G.eval(), D.eval()
    torch.manual_seed(0)
    Gp, Dp = create_model("dcgan", resolution=16, img_channels=3, width=0.125, z_dim=16)
    Gp.eval(), Dp.eval()
    for net, plain, inp in ((G, Gp, z), (D, Dp, x)):
        sd = sparse_state_dict(net)
        plain.load_state_dict(sd, strict=True)
        with torch.no_grad():
            assert torch.allclose(plain(inp), net(inp), atol=1e-6)
        plain.load_state_dict(dense_state_dict(net), strict=True)
        for name, module, dm in dynamic_layers(net):
            w = dict(plain.named_modules())[name[: -len(".weight")]]
            assert torch.equal(raw_weight(w), raw_weight(module))
        assert any((~dm.sparse_mask()).any() for _, _, dm in dynamic_layers(net))
    assert "fc.weight" in sparse_state_dict(G) and "blocks.0.parametrizations.weight.0._u" in sparse_state_dict(D)


def test_resume_is_bit_identical(tmp_path):
    from degan.train import load_checkpoint, save_checkpoint

    def run(state, kimg, log):
        dyn = DynamicPruning(lam=5e-4, log_path=log)
        Trainer(state, images(), dyn.wrap(GANObjective("hinge")), total_kimg=kimg, batch_D=8, batch_G=8, n_dis=1,
                ema_decay=0.9, callbacks=[dyn]).run()

    def fresh():
        return make_dynamic_state(*dcgan_pair(), lr_G=2e-3, lr_D=2e-3, betas=(0.5, 0.9), seed=3)

    full = fresh()
    run(full, 0.064, tmp_path / "a.jsonl")
    half = fresh()
    run(half, 0.032, tmp_path / "b.jsonl")
    save_checkpoint(tmp_path / "c.pt", {"state": half.state_dict()})
    resumed = fresh()
    resumed.load_state_dict(load_checkpoint(tmp_path / "c.pt")["state"])
    run(resumed, 0.064, tmp_path / "b.jsonl")
    assert 0 < dynamic_density(full.G)["density"] < 1
    for net in ("G", "D", "G_ema"):
        a, b = getattr(full, net).state_dict(), getattr(resumed, net).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), net
