"""Optimizers and schedulers built from option dicts: update rules and lr curves by hand."""
import math

import pytest
import torch
from torch import nn

import uiqa_plugin  # noqa: F401  (before basicsr: installs the torchvision alias)
from uiqa_plugin.optim import build_optimizer, build_scheduler, supported_optimizers


def _param(values=(1.0, -2.0)):
    return nn.Parameter(torch.tensor(values, dtype=torch.float64))


def _step(optimizer, param):
    """One step on loss = sum(w^2) / 2, whose gradient is w itself."""
    optimizer.zero_grad()
    (param**2).sum().div(2).backward()
    optimizer.step()


def test_sgd_plain_with_weight_decay_one_step():
    w = _param()
    _step(build_optimizer([w], {'type': 'SGD', 'lr': 0.1, 'weight_decay': 0.01}), w)
    # w - lr * (g + wd * w) with g = w.
    assert w.tolist() == pytest.approx([1.0 * (1 - 0.1 * 1.01), -2.0 * (1 - 0.1 * 1.01)], abs=1e-12)


def test_sgd_momentum_two_steps():
    w = _param()
    optimizer = build_optimizer([w], {'type': 'SGD', 'lr': 0.1, 'momentum': 0.9})
    _step(optimizer, w)
    w1 = [1.0 - 0.1 * 1.0, -2.0 + 0.1 * 2.0]  # buffer = g0 = w0
    assert w.tolist() == pytest.approx(w1, abs=1e-12)
    _step(optimizer, w)
    # buffer = 0.9 * g0 + g1 with g1 = w1.
    w2 = [w1[k] - 0.1 * (0.9 * w0 + w1[k]) for k, w0 in enumerate([1.0, -2.0])]
    assert w.tolist() == pytest.approx(w2, abs=1e-12)


def test_sgd_nesterov_one_step():
    w = _param()
    _step(build_optimizer([w], {'type': 'SGD', 'lr': 0.1, 'momentum': 0.9, 'nesterov': True}), w)
    # Nesterov update g + mu * buffer = (1 + mu) g on the first step.
    assert w.tolist() == pytest.approx([1.0 - 0.19, -2.0 + 0.38], abs=1e-12)


def test_adam_and_adamw_first_step():
    # Bias-corrected Adam moves each weight by lr * sign(g) on its first step.
    w = _param()
    _step(build_optimizer([w], {'type': 'Adam', 'lr': 0.01, 'betas': [0.9, 0.99]}), w)
    assert w.tolist() == pytest.approx([0.99, -1.99], abs=1e-6)
    w = _param()
    optimizer = build_optimizer([w], {'type': 'AdamW', 'lr': 0.01, 'weight_decay': 0.5})
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.param_groups[0]['weight_decay'] == 0.5
    _step(optimizer, w)
    # Decoupled decay first: w (1 - lr wd), then the Adam step.
    assert w.tolist() == pytest.approx([1.0 * 0.995 - 0.01, -2.0 * 0.995 + 0.01], abs=1e-6)


def test_any_torch_optimizer_by_name_and_module_input():
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    net[0].requires_grad_(False)
    optimizer = build_optimizer(net, {'type': 'RMSprop', 'lr': 1e-3})
    assert isinstance(optimizer, torch.optim.RMSprop)
    # Only the trainable layer is optimised.
    assert sum(p.numel() for p in optimizer.param_groups[0]['params']) == 3 + 1
    assert {'SGD', 'Adam', 'AdamW'} <= set(supported_optimizers())


def test_param_groups_keep_their_lr():
    a, b = _param(), _param()
    options = {'type': 'SGD', 'lr': 0.002}
    optimizer = build_optimizer([{'params': [a]}, {'params': [b], 'lr': 0.1}], options)
    assert [g['lr'] for g in optimizer.param_groups] == [0.002, 0.1]
    assert options == {'type': 'SGD', 'lr': 0.002}  # not modified


@pytest.mark.parametrize('options, message', [
    ({'type': 'Sgd', 'lr': 0.1}, r"unknown type 'Sgd'; supported: \[.*'SGD'"),
    ({'type': 'SGD', 'lr': 0.1, 'momentun': 0.9},
     r"SGD: unknown option\(s\) \['momentun'\]; accepted: \['lr', 'momentum'"),
    ({'lr': 0.1}, 'no "type" given'),
])
def test_optimizer_errors(options, message):
    with pytest.raises(ValueError, match=message):
        build_optimizer([_param()], options)


def test_optimizer_without_parameters():
    with pytest.raises(ValueError, match='no trainable parameters'):
        build_optimizer(nn.Linear(2, 2).requires_grad_(False), {'type': 'SGD', 'lr': 0.1})


def _lrs(sched_opt, steps, base_lrs=(0.1, ), total_iter=None):
    """Learning rates of each group after 0, 1, ..., steps scheduler steps."""
    groups = [{'params': [_param()], 'lr': lr} for lr in base_lrs]
    optimizer = build_optimizer(groups, {'type': 'SGD'})
    scheduler = build_scheduler(optimizer, sched_opt, total_iter=total_iter)
    curve = [[g['lr'] for g in optimizer.param_groups]]
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        curve.append([g['lr'] for g in optimizer.param_groups])
    return curve


def test_cosine_to_eta_min_over_total_iter():
    lr0, eta_min, total = 0.002, 1e-7, 8
    curve = _lrs({'type': 'CosineAnnealingLR', 'eta_min': eta_min}, 12, base_lrs=(lr0, ), total_iter=total)
    for k in (0, 2, 4, 6, 8):
        expected = eta_min + 0.5 * (lr0 - eta_min) * (1 + math.cos(math.pi * k / total))
        assert curve[k][0] == pytest.approx(expected, rel=1e-12)
    assert curve[4][0] == pytest.approx((lr0 + eta_min) / 2)
    assert [c[0] for c in curve[8:]] == pytest.approx([eta_min] * 5, rel=1e-12)  # flat after T_max
    # T_max in the options wins over total_iter.
    assert _lrs({'type': 'CosineAnnealingLR', 'T_max': 4}, 4, total_iter=8)[4][0] == 0.0


def test_cosine_scales_each_param_group():
    curve = _lrs({'type': 'CosineAnnealingLR', 'T_max': 4}, 2, base_lrs=(0.1, 0.01))
    assert curve[2] == pytest.approx([0.05, 0.005])


def test_cosine_stays_on_curve_after_warmup_writes_lr():
    # BasicSR's warm-up overwrites group['lr'] between steps; the closed form ignores that.
    optimizer = build_optimizer([_param()], {'type': 'SGD', 'lr': 1.0})
    scheduler = build_scheduler(optimizer, {'type': 'CosineAnnealingLR', 'T_max': 10})
    optimizer.step()
    scheduler.step()
    optimizer.param_groups[0]['lr'] = 0.123
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]['lr'] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 10)))


def test_basicsr_cosine_restart_curve():
    curve = _lrs({'type': 'CosineAnnealingRestartLR', 'periods': [4, 4], 'restart_weights': [1, 0.5]}, 8)
    assert curve[2][0] == pytest.approx(0.05)  # half way through the first period
    assert curve[4][0] == pytest.approx(0.0, abs=1e-15)  # end of the first period
    assert curve[5][0] == pytest.approx(0.5 * 0.5 * 0.1 * (1 + math.cos(math.pi / 4)))  # restart at half weight
    assert curve[6][0] == pytest.approx(0.025)


def test_basicsr_multistep_curve():
    curve = _lrs({'type': 'MultiStepRestartLR', 'milestones': [2, 4], 'gamma': 0.5}, 5)
    assert [c[0] for c in curve] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    assert _lrs({'type': 'MultiStepLR', 'milestones': [1]}, 1)[1][0] == pytest.approx(0.01)  # BasicSR's alias


@pytest.mark.parametrize('sched_opt', [{'type': 'none'}, None])
def test_constant_schedule(sched_opt):
    assert [c[0] for c in _lrs(sched_opt, 3)] == [0.1] * 4


@pytest.mark.parametrize('sched_opt', [
    {'type': 'CosineAnnealingLR', 'T_max': 10, 'eta_min': 1e-7},
    {'type': 'CosineAnnealingRestartLR', 'periods': [3, 7], 'restart_weights': [1, 0.5], 'eta_min': 1e-6},
    {'type': 'MultiStepRestartLR', 'milestones': [2, 6], 'gamma': 0.5},
])
def test_scheduler_state_dict_round_trip(sched_opt):
    w = _param()

    def build():
        optimizer = build_optimizer([w], {'type': 'SGD', 'lr': 0.1, 'momentum': 0.9})
        return optimizer, build_scheduler(optimizer, sched_opt)

    optimizer, scheduler = build()
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    states = optimizer.state_dict(), scheduler.state_dict()
    uninterrupted = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        uninterrupted.append(optimizer.param_groups[0]['lr'])

    optimizer, scheduler = build()  # a resumed run: fresh objects, saved states
    optimizer.load_state_dict(states[0])
    scheduler.load_state_dict(states[1])
    resumed = []
    for _ in range(4):
        optimizer.step()
        scheduler.step()
        resumed.append(optimizer.param_groups[0]['lr'])
    assert resumed == pytest.approx(uninterrupted, rel=1e-12)
    assert len(set(uninterrupted)) > 1  # the curve really moves over these steps


@pytest.mark.parametrize('sched_opt, message', [
    ({'type': 'Cosine'}, r"unknown type 'Cosine'; supported: \['CosineAnnealingLR'"),
    ({'type': 'CosineAnnealingLR', 'Tmax': 10}, r"unknown option\(s\) \['Tmax'\]; accepted: \['T_max', 'eta_min'\]"),
    ({'type': 'CosineAnnealingLR'}, 'give T_max'),
    ({'type': 'CosineAnnealingRestartLR', 'periods': [4, 4]}, 'must have the same length'),
    ({'eta_min': 0}, 'no "type" given'),
])
def test_scheduler_errors(sched_opt, message):
    optimizer = build_optimizer([_param()], {'type': 'SGD', 'lr': 0.1})
    with pytest.raises(ValueError, match=message):
        build_scheduler(optimizer, sched_opt)


def test_cosine_restart_periods_must_cover_training():
    optimizer = build_optimizer([_param()], {'type': 'SGD', 'lr': 0.1})
    with pytest.raises(ValueError, match='sum to 8 iterations but training runs 10'):
        build_scheduler(optimizer, {'type': 'CosineAnnealingRestartLR', 'periods': [8]}, total_iter=10)
