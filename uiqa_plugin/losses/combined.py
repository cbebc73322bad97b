"""A weighted sum of the losses configured in a training options block.

Every ``<name>_opt`` entry of ``train`` is one loss, built with BasicSR's ``build_loss``
from the loss registry (ours and BasicSR's), e.g.::

    train:
      mse_opt: {type: MSELoss, loss_weight: 1.0}
      rank_opt: {type: FidelityRankLoss, loss_weight: 0.1, temperature: 0.1}

The total is the sum of the (already weighted) terms; each term is logged as ``l_<name>``.
An entry set to null (``rank_opt: ~``) is switched off.
"""
from collections.abc import Mapping

from torch import nn

from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY

__all__ = ['LossSet', 'build_loss_set']


class LossSet(nn.Module):
    """Sum of named losses; forward(pred, target) -> (total, {'l_<name>': detached term})."""

    def __init__(self, losses):
        super().__init__()
        if not losses:
            raise ValueError('LossSet needs at least one loss')
        self.losses = nn.ModuleDict(losses)

    def forward(self, pred, target):
        """pred, target: tensors of the same shape, e.g. [N] or [N, 1] scores."""
        if pred.shape != target.shape:
            # Pointwise losses would broadcast [N, 1] against [N] into [N, N] silently.
            raise ValueError(f'loss: pred has shape {tuple(pred.shape)} but target {tuple(target.shape)}; '
                             'they must match (reshape target to pred\'s shape)')
        total, terms = 0, {}
        for name, loss in self.losses.items():
            value = loss(pred, target)
            terms[f'l_{name}'] = value.detach()
            total = total + value
        return total, terms


def build_loss_set(train_opt):
    """Build a :class:`LossSet` from the ``*_opt`` entries of a ``train`` options dict.

    Args:
        train_opt (dict): the ``train`` block; keys ending in ``_opt`` are losses, each a dict
            with ``type`` (a LOSS_REGISTRY name) and the loss's keyword arguments, or None.

    Returns:
        LossSet whose terms are named after the keys without ``_opt`` (``mse_opt`` -> ``mse``).
    """
    losses = {}
    for key, opt in train_opt.items():
        if not key.endswith('_opt') or opt is None:
            continue
        name = key[:-len('_opt')]
        if not isinstance(opt, Mapping):
            raise ValueError(f'train.{key}: expected a dict with a "type" key, got {opt!r}')
        if 'type' not in opt:
            raise ValueError(f'train.{key}: no "type" given (one of {sorted(LOSS_REGISTRY.keys())})')
        if opt['type'] not in LOSS_REGISTRY:
            raise ValueError(f'train.{key}: unknown loss type {opt["type"]!r}; registered losses are '
                             f'{sorted(LOSS_REGISTRY.keys())}')
        try:
            losses[name] = build_loss(dict(opt))
        except TypeError as error:  # unknown or missing keyword argument
            raise ValueError(f'train.{key}: {error}') from None
    if not losses:
        raise ValueError('train: no loss configured; add an entry such as "mse_opt: {type: MSELoss, loss_weight: 1.0}"')
    return LossSet(losses)
