"""Batch-level IQA losses: correlation (PLCC) and pairwise ranking (fidelity, margin).

Pointwise losses come from BasicSR (``MSELoss``, ``L1Loss``, ``CharbonnierLoss`` are already
registered there). The losses here compare the scores of a batch with each other, so they
need a batch of at least 2. Inputs: ``pred`` and ``target`` of the same shape ``[N]``,
``[N, 1]`` or ``[N, T]`` (T scored attributes, each handled as its own column over the batch).
Like BasicSR's losses each takes ``loss_weight`` and ``reduction`` ('mean' | 'sum' | 'none').
"""
import torch
from torch import nn

from basicsr.utils.registry import LOSS_REGISTRY

_REDUCTIONS = ('none', 'mean', 'sum')


def _check_reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f'Unsupported reduction mode: {reduction!r}. Supported ones are: {list(_REDUCTIONS)}')


def _as_columns(pred, target, loss_name):
    """Both as [N, T] with target cast to pred's dtype; shape mismatch or N < 2 raises."""
    if pred.shape != target.shape:
        raise ValueError(f'{loss_name}: pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; '
                         'they must match (reshape target to pred\'s shape)')
    if pred.dim() not in (1, 2):
        raise ValueError(f'{loss_name}: expected [N], [N, 1] or [N, T] scores, got shape {tuple(pred.shape)}')
    if pred.shape[0] < 2:
        raise ValueError(f'{loss_name}: compares samples within a batch, needs a batch of at least 2, '
                         f'got {pred.shape[0]}')
    pred = pred.reshape(pred.shape[0], -1)
    return pred, target.reshape(pred.shape).to(pred.dtype)


def _pair_differences(values):
    """[N, T] -> [P, T] differences values[i] - values[j] over all P = N(N-1)/2 pairs i < j."""
    i, j = torch.triu_indices(values.shape[0], values.shape[0], offset=1, device=values.device)
    return values[i] - values[j]


def _reduce(loss, reduction, squeeze):
    """'mean' / 'sum' to a scalar; 'none' keeps [..., T], dropping T for 1-D inputs."""
    if reduction == 'mean':
        return loss.mean()
    if reduction == 'sum':
        return loss.sum()
    return loss.squeeze(-1) if squeeze else loss


def plcc_loss(pred, target, eps=1e-8):
    """1 - PLCC per column: [N, T] -> [T], in [0, 2].

    ``eps`` is added under the square roots of the variances so that a constant batch gives
    loss 1 with finite gradients instead of NaN. Being scale-free, the gradient grows like
    1 / std(pred); ``eps`` caps it for (near-)constant batches.
    """
    pred_c = pred - pred.mean(dim=0, keepdim=True)
    target_c = target - target.mean(dim=0, keepdim=True)
    cov = (pred_c * target_c).sum(dim=0)
    norm = torch.sqrt((pred_c**2).sum(dim=0) + eps) * torch.sqrt((target_c**2).sum(dim=0) + eps)
    return 1.0 - cov / norm


def fidelity_loss(p, q, eps=1e-8):
    """Fidelity loss ``1 - sqrt(p q) - sqrt((1 - p)(1 - q))`` of two Bernoulli probabilities.

    In [0, 1], 0 when p == q. ``eps`` under the roots keeps the gradient finite when p
    saturates at 0 or 1; it also pushes the value at p == q slightly below 0 (by up to
    2 sqrt(eps)), so the result is clamped at 0.
    """
    return torch.clamp(1.0 - torch.sqrt(p * q + eps) - torch.sqrt((1.0 - p) * (1.0 - q) + eps), min=0)


@LOSS_REGISTRY.register()
class PLCCLoss(nn.Module):
    """1 - Pearson linear correlation between predictions and targets over the batch.

    Insensitive to the scale and offset of the scores, so it is usually paired with a
    pointwise loss (MSE) that pins them to the target scale.

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
        reduction (str): 'mean' | 'sum' over the T columns, or 'none' for shape [T] ([] for
            [N] inputs). Default: 'mean'.
        eps (float): stabiliser under the variance roots. Default: 1e-8.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', eps=1e-8):
        super().__init__()
        _check_reduction(reduction)
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.eps = eps

    def forward(self, pred, target, **kwargs):
        """pred, target: [N], [N, 1] or [N, T] with N >= 2."""
        squeeze = pred.dim() == 1
        pred, target = _as_columns(pred, target, type(self).__name__)
        return self.loss_weight * _reduce(plcc_loss(pred, target, self.eps), self.reduction, squeeze)


@LOSS_REGISTRY.register()
class FidelityRankLoss(nn.Module):
    """Pairwise fidelity ranking loss over all pairs (i < j) of the batch.

    For each pair, the predicted probability that i is better than j is
    ``p = Phi((s_i - s_j) / temperature)`` (Phi: the standard normal CDF); the target is
    ``q = Phi((m_i - m_j) / target_temperature)`` ('soft', as in UIQA) or the hard order
    1 / 0.5 / 0 for m_i > m_j, m_i == m_j, m_i < m_j ('hard'). The loss per pair is
    :func:`fidelity_loss` (p, q).

    Why a temperature: UIQA applies Phi to raw regression outputs, whose pair differences
    are of order 1. Our scores are probabilities or MOS/100 in [0, 1], so within a batch
    differences are ~0.01-0.2 and Phi(diff) stays near 0.5; the gradient w.r.t. the scores,
    which scales as 1 / temperature, then nearly vanishes (and soft targets Phi(dm) are near
    0.5 too, so the loss does as well). A temperature of about the spread of the targets
    (0.1 for [0, 1] scores) puts p and q back in their informative range. Use
    temperature = target_temperature = 1 to reproduce UIQA on raw outputs and raw MOS.

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
        reduction (str): 'mean' | 'sum' over pairs (and columns), or 'none' for [P, T] ([P]
            for [N] inputs), pairs in ``torch.triu_indices(N, N, 1)`` order. Default: 'mean'.
        temperature (float): scale of predicted score differences, > 0. Default: 0.1.
        target_mode (str): 'soft' (Phi of target differences) or 'hard' (1/0.5/0). Default: 'soft'.
        target_temperature (float | None): scale of target differences in 'soft' mode, > 0;
            None uses ``temperature`` (scores and targets on the same scale). Default: None.
        eps (float): stabiliser under the roots of the fidelity. Default: 1e-8.
    """

    def __init__(self,
                 loss_weight=1.0,
                 reduction='mean',
                 temperature=0.1,
                 target_mode='soft',
                 target_temperature=None,
                 eps=1e-8):
        super().__init__()
        _check_reduction(reduction)
        if target_mode not in ('soft', 'hard'):
            raise ValueError(f'FidelityRankLoss: target_mode must be "soft" or "hard", got {target_mode!r}')
        if target_temperature is None:
            target_temperature = temperature
        for name, value in (('temperature', temperature), ('target_temperature', target_temperature)):
            if not value > 0:
                raise ValueError(f'FidelityRankLoss: {name} must be > 0, got {value}')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.temperature = float(temperature)
        self.target_mode = target_mode
        self.target_temperature = float(target_temperature)
        self.eps = eps

    def forward(self, pred, target, **kwargs):
        """pred, target: [N], [N, 1] or [N, T] with N >= 2."""
        squeeze = pred.dim() == 1
        pred, target = _as_columns(pred, target, type(self).__name__)
        p = torch.special.ndtr(_pair_differences(pred) / self.temperature)
        target_diff = _pair_differences(target.detach())
        if self.target_mode == 'soft':
            q = torch.special.ndtr(target_diff / self.target_temperature)
        else:
            q = 0.5 * (torch.sign(target_diff) + 1.0)
        return self.loss_weight * _reduce(fidelity_loss(p, q, self.eps), self.reduction, squeeze)


@LOSS_REGISTRY.register()
class MarginRankLoss(nn.Module):
    """Pairwise hinge ranking loss ``max(0, margin - sign(m_i - m_j) (s_i - s_j))``.

    Over all pairs i < j of the batch whose targets differ; pairs tied in the target carry no
    order and are left out ('mean' averages over the remaining pairs; a batch with no ordered
    pair gives 0).

    Args:
        loss_weight (float): multiplies the loss. Default: 1.0.
        reduction (str): 'mean' | 'sum' over ordered pairs, or 'none' for [P, T] ([P] for [N]
            inputs; 0 on tied pairs). Default: 'mean'.
        margin (float): required score gap, in the unit of ``pred`` (>= 0). Default: 0.0.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', margin=0.0):
        super().__init__()
        _check_reduction(reduction)
        if margin < 0:
            raise ValueError(f'MarginRankLoss: margin must be >= 0, got {margin}')
        self.loss_weight = loss_weight
        self.reduction = reduction
        self.margin = float(margin)

    def forward(self, pred, target, **kwargs):
        """pred, target: [N], [N, 1] or [N, T] with N >= 2."""
        squeeze = pred.dim() == 1
        pred, target = _as_columns(pred, target, type(self).__name__)
        order = torch.sign(_pair_differences(target.detach()))
        loss = torch.clamp(self.margin - order * _pair_differences(pred), min=0) * order.abs()
        if self.reduction == 'mean':
            loss = loss.sum() / order.abs().sum().clamp(min=1)
        else:
            loss = _reduce(loss, self.reduction, squeeze)
        return self.loss_weight * loss
