"""Batch IQA losses and the loss set built from training options."""
import itertools
import math

import pytest
import torch

import uiqa_plugin  # noqa: F401  (before basicsr: installs the torchvision alias)
from uiqa_plugin.losses.combined import LossSet, build_loss_set
from uiqa_plugin.losses.iqa_loss import FidelityRankLoss, MarginRankLoss, PLCCLoss
from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY

PRED = [1.0, 2.0, 2.0, 4.0, 5.0]
TARGET = [2.0, 1.0, 3.0, 3.0, 5.0]


def phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def fidelity(p, q):
    return 1 - math.sqrt(p * q) - math.sqrt((1 - p) * (1 - q))


def test_registered_under_their_names():
    for cls in (PLCCLoss, FidelityRankLoss, MarginRankLoss):
        assert LOSS_REGISTRY.get(cls.__name__) is cls
    loss = build_loss({'type': 'FidelityRankLoss', 'loss_weight': 0.1, 'temperature': 0.05})
    assert isinstance(loss, FidelityRankLoss) and loss.temperature == 0.05 and loss.loss_weight == 0.1


def test_plcc_loss_by_hand():
    # PLCC of this table: cov 7.8, sums of squares 10.8 and 8.8 (means 2.8).
    expected = 1 - 7.8 / math.sqrt(10.8 * 8.8)
    loss = PLCCLoss(eps=0)(torch.tensor(PRED), torch.tensor(TARGET))
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert PLCCLoss()(torch.tensor(PRED), torch.tensor(TARGET)).item() == pytest.approx(expected, abs=1e-6)
    # Scale and offset of the prediction do not matter.
    shifted = PLCCLoss()(3 * torch.tensor(PRED) + 7, torch.tensor(TARGET))
    assert shifted.item() == pytest.approx(expected, abs=1e-6)


def test_plcc_loss_columns_reduction_and_weight():
    pred = torch.tensor([PRED, [5.0, 4.0, 3.0, 2.0, 1.0]]).T  # [5, 2]
    target = torch.tensor([TARGET, [1.0, 2.0, 3.0, 4.0, 5.0]]).T
    per_column = PLCCLoss(reduction='none', eps=0)(pred, target)
    assert per_column.shape == (2, )
    assert per_column.tolist() == pytest.approx([1 - 7.8 / math.sqrt(10.8 * 8.8), 2.0], abs=1e-6)
    assert PLCCLoss(reduction='sum', eps=0)(pred, target).item() == pytest.approx(per_column.sum().item())
    assert PLCCLoss(loss_weight=0.5, eps=0)(pred, target).item() == pytest.approx(0.5 * per_column.mean().item())
    assert PLCCLoss(reduction='none')(torch.tensor(PRED), torch.tensor(TARGET)).shape == ()


def test_plcc_loss_gradient_and_constant_batch():
    pred = torch.tensor(PRED, requires_grad=True)
    loss = PLCCLoss()(pred, torch.tensor(TARGET))
    loss.backward()
    # A small step against the gradient raises the correlation.
    with torch.no_grad():
        assert PLCCLoss()(pred - 0.01 * pred.grad, torch.tensor(TARGET)) < loss
    constant = torch.full((4, ), 0.5, requires_grad=True)
    loss = PLCCLoss()(constant, torch.tensor([0.1, 0.4, 0.2, 0.9]))
    loss.backward()
    assert loss.item() == pytest.approx(1.0)
    assert torch.isfinite(constant.grad).all()


def test_fidelity_soft_targets_by_hand():
    pred = [0.3, 0.1, 0.25]
    target = [0.5, 0.2, 0.4]
    expected = [
        fidelity(phi((pred[i] - pred[j]) / 0.1), phi((target[i] - target[j]) / 0.2))
        for i, j in itertools.combinations(range(3), 2)
    ]
    loss = FidelityRankLoss(reduction='none', temperature=0.1, target_temperature=0.2, eps=0)
    values = loss(torch.tensor(pred, dtype=torch.float64), torch.tensor(target, dtype=torch.float64))
    assert values.shape == (3, )
    assert values.tolist() == pytest.approx(expected, abs=1e-12)
    mean = FidelityRankLoss(temperature=0.1, target_temperature=0.2, eps=0)
    assert mean(torch.tensor(pred), torch.tensor(target)).item() == pytest.approx(sum(expected) / 3, abs=1e-6)


def test_fidelity_hard_targets_and_ties():
    pred = torch.tensor([[0.3], [0.1], [0.2]], dtype=torch.float64)
    target = torch.tensor([[1.0], [0.0], [1.0]], dtype=torch.float64)
    # Pairs (0,1), (0,2), (1,2) have hard targets 1, 0.5 (tie), 0.
    expected = [fidelity(phi(2.0), 1.0), fidelity(phi(1.0), 0.5), fidelity(phi(-1.0), 0.0)]
    values = FidelityRankLoss(reduction='none', temperature=0.1, target_mode='hard', eps=0)(pred, target)
    assert values.shape == (3, 1)
    assert values[:, 0].tolist() == pytest.approx(expected, abs=1e-12)
    summed = FidelityRankLoss(reduction='sum', temperature=0.1, target_mode='hard', loss_weight=2.0, eps=0)
    assert summed(pred, target).item() == pytest.approx(2 * sum(expected), abs=1e-12)


def test_fidelity_perfect_agreement_is_zero_and_finite():
    # Far-apart scores saturate Phi; eps keeps gradients finite and the value is clamped at 0.
    pred = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    loss = FidelityRankLoss(temperature=0.01)(pred, pred.detach().clone())
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(pred.grad).all()


def _score_gradient(temperature, target_temperature=None, target_mode='hard'):
    # Scores in [0, 1] that differ by a few hundredths, as probabilities from CLIP do.
    pred = torch.tensor([0.52, 0.50, 0.55, 0.47], requires_grad=True)
    target = torch.tensor([0.60, 0.40, 0.70, 0.30])
    FidelityRankLoss(temperature=temperature, target_mode=target_mode,
                     target_temperature=target_temperature)(pred, target).backward()
    return pred.grad.abs().sum().item()


def test_temperature_sharpens_the_gradient():
    # With temperature 1, Phi(diff) stays near 0.5 and the gradient is ~ phi(0) / T small.
    assert _score_gradient(0.05) > 5 * _score_gradient(1.0)
    # Soft targets at temperature 1 are near 0.5 too: p ~ q ~ 0.5, the gradient all but vanishes.
    assert _score_gradient(0.05, target_mode='soft') > 20 * _score_gradient(1.0, target_mode='soft')
    pred, target = torch.tensor([0.52, 0.50, 0.55, 0.47]), torch.tensor([0.60, 0.40, 0.70, 0.30])
    assert FidelityRankLoss(temperature=1.0)(pred, target) < 0.1 * FidelityRankLoss(temperature=0.05)(pred, target)


def test_margin_rank_loss_by_hand():
    pred = torch.tensor([0.3, 0.1, 0.2], requires_grad=True)
    target = torch.tensor([1.0, 0.0, 1.0])
    # (0,1): 0.2 - (+1)(0.2) -> 0; (0,2): target tie, skipped; (1,2): 0.2 - (-1)(-0.1) = 0.1.
    values = MarginRankLoss(reduction='none', margin=0.2)(pred, target)
    assert values.tolist() == pytest.approx([0.0, 0.0, 0.1], abs=1e-6)
    mean = MarginRankLoss(margin=0.2)(pred, target)
    assert mean.item() == pytest.approx(0.05, abs=1e-6)  # over the 2 ordered pairs
    assert MarginRankLoss(margin=0.2, reduction='sum', loss_weight=3)(pred, target).item() == pytest.approx(0.3)
    mean.backward()
    # Only pair (1,2) is active: it pushes pred[2] up and pred[1] down.
    assert pred.grad.tolist() == pytest.approx([0.0, 0.5, -0.5], abs=1e-6)  # d(0.2 + p1 - p2)/2
    tied = MarginRankLoss(margin=0.2)(pred, torch.ones(3))
    assert tied.item() == 0.0


@pytest.mark.parametrize('loss', [PLCCLoss(), FidelityRankLoss(), MarginRankLoss()])
def test_shape_and_batch_errors(loss):
    with pytest.raises(ValueError, match=r'pred has shape \(4, 1\) but target \(4,\)'):
        loss(torch.rand(4, 1), torch.rand(4))
    with pytest.raises(ValueError, match='batch of at least 2'):
        loss(torch.rand(1), torch.rand(1))
    with pytest.raises(ValueError, match='expected'):
        loss(torch.rand(2, 3, 4), torch.rand(2, 3, 4))


def test_option_errors():
    with pytest.raises(ValueError, match='Unsupported reduction'):
        PLCCLoss(reduction='avg')
    with pytest.raises(ValueError, match='temperature must be > 0'):
        FidelityRankLoss(temperature=0)
    with pytest.raises(ValueError, match='target_mode'):
        FidelityRankLoss(target_mode='binary')
    with pytest.raises(ValueError, match='margin must be >= 0'):
        MarginRankLoss(margin=-1)


TRAIN_OPT = {
    'total_iter': 100,
    'optim_g': {'type': 'SGD', 'lr': 0.002},
    'scheduler': {'type': 'CosineAnnealingLR', 'eta_min': 1e-7},
    'mse_opt': {'type': 'MSELoss', 'loss_weight': 1.0},
    'rank_opt': {'type': 'FidelityRankLoss', 'loss_weight': 0.1, 'temperature': 0.1},
    'plcc_opt': None,  # switched off
}


def test_loss_set_sums_weighted_terms():
    loss_set = build_loss_set(TRAIN_OPT)
    assert isinstance(loss_set, LossSet) and list(loss_set.losses) == ['mse', 'rank']
    pred = torch.tensor([[0.2], [0.5], [0.4], [0.9]], requires_grad=True)
    target = torch.tensor([[0.1], [0.6], [0.3], [0.8]])
    total, terms = loss_set(pred, target)
    mse = ((pred - target)**2).mean()
    rank = 0.1 * FidelityRankLoss(temperature=0.1)(pred, target)
    assert set(terms) == {'l_mse', 'l_rank'}
    assert terms['l_mse'].item() == pytest.approx(mse.item())
    assert terms['l_rank'].item() == pytest.approx(rank.item())
    assert total.item() == pytest.approx(mse.item() + rank.item())
    assert not terms['l_mse'].requires_grad
    total.backward()
    assert pred.grad.abs().sum() > 0
    assert TRAIN_OPT['mse_opt'] == {'type': 'MSELoss', 'loss_weight': 1.0}  # options left untouched


def test_loss_set_errors():
    with pytest.raises(ValueError, match='no loss configured'):
        build_loss_set({'optim_g': {'type': 'Adam'}, 'pixel_opt': None})
    with pytest.raises(ValueError, match=r'train.rank_opt: no "type" given'):
        build_loss_set({'rank_opt': {'loss_weight': 1.0}})
    with pytest.raises(ValueError, match=r"train.rank_opt: unknown loss type 'RankLoss'"):
        build_loss_set({'rank_opt': {'type': 'RankLoss'}})
    with pytest.raises(ValueError, match=r"train.rank_opt: .*temperatur"):
        build_loss_set({'rank_opt': {'type': 'FidelityRankLoss', 'temperatur': 0.1}})
    with pytest.raises(ValueError, match=r'train.mse_opt: expected a dict'):
        build_loss_set({'mse_opt': 'MSELoss'})
    # A [N, 1] prediction against a [N] target would broadcast to [N, N] in MSELoss.
    with pytest.raises(ValueError, match='must match'):
        build_loss_set(TRAIN_OPT)(torch.rand(4, 1), torch.rand(4))
