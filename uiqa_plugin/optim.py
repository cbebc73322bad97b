"""Optimizers and learning-rate schedulers from option dicts.

BasicSR 1.4.2 builds only Adam; the CLIP-IQA+ recipe needs SGD and the CLIP-UIQA report
AdamW. ``build_optimizer`` takes any ``torch.optim`` class by name; ``build_scheduler``
builds BasicSR's two iteration-wise schedulers, a plain cosine decay and a constant one.
Option dicts are never modified (BasicSR pops ``type`` in place, which breaks a resume).

Schedulers are stepped once per iteration, as BasicSR does: after k steps the lr is the
curve's value at k.
"""
import inspect
import math

import torch
from torch import nn
from torch.optim import lr_scheduler as torch_schedulers

from basicsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR

__all__ = ['build_optimizer', 'build_scheduler', 'CosineDecayLR', 'SCHEDULERS', 'supported_optimizers']


def supported_optimizers():
    """Names of the optimizer classes in ``torch.optim`` (SGD, Adam, AdamW, ...)."""
    return sorted(
        name for name, obj in vars(torch.optim).items()
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer) and obj is not torch.optim.Optimizer)


def _accepted_options(obj, skip):
    return [name for name in inspect.signature(obj).parameters if name not in ('self', *skip)]


def _check_options(kind, type_name, obj, options, skip):
    accepted = _accepted_options(obj, skip)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise ValueError(f'{kind} {type_name}: unknown option(s) {unknown}; accepted: {accepted}')


def build_optimizer(params, optim_opt):
    """Build a ``torch.optim`` optimizer from an option dict.

    Args:
        params: an ``nn.Module`` (its parameters with ``requires_grad``), an iterable of
            tensors, or a list of param-group dicts (``{'params': [...], 'lr': 1e-3}``); a
            group without its own ``lr`` gets the one of ``optim_opt``.
        optim_opt (dict): ``type`` (a ``torch.optim`` class name: SGD, Adam, AdamW, ...) and
            its keyword arguments, e.g. ``{type: SGD, lr: 0.002, momentum: 0.9,
            nesterov: true, weight_decay: 1e-4}``.

    Returns:
        torch.optim.Optimizer.
    """
    options = dict(optim_opt)
    type_name = options.pop('type', None)
    if type_name is None:
        raise ValueError(f'optimizer: no "type" given; supported: {supported_optimizers()}')
    if type_name not in supported_optimizers():
        raise ValueError(f'optimizer: unknown type {type_name!r}; supported: {supported_optimizers()}')
    cls = getattr(torch.optim, type_name)
    _check_options('optimizer', type_name, cls, options, skip=('params', ))
    if 'betas' in options:  # YAML gives a list
        options['betas'] = tuple(options['betas'])
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    params = list(params)
    if not params:
        raise ValueError(f'optimizer {type_name}: no trainable parameters were given')
    return cls(params, **options)


class CosineDecayLR(torch_schedulers.LRScheduler):
    """Cosine decay from each group's initial lr to ``eta_min`` over ``T_max`` steps, then flat.

    Closed form in the step count, unlike torch's recursive CosineAnnealingLR: it stays on
    its curve when something else writes the lr in between (BasicSR's linear warm-up does),
    and it holds ``eta_min`` after ``T_max`` instead of climbing back up.
    """

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if int(T_max) < 1:
            raise ValueError(f'scheduler CosineAnnealingLR: T_max must be a positive integer, got {T_max}')
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        progress = min(self.last_epoch, self.T_max) / self.T_max
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        return [self.eta_min + (base_lr - self.eta_min) * factor for base_lr in self.base_lrs]


def _multistep(optimizer, **options):
    return MultiStepRestartLR(optimizer, **options)


def _cosine_restart(optimizer, total_iter=None, **options):
    periods = list(options.get('periods', []))
    weights = list(options.get('restart_weights', [1]))
    if len(periods) != len(weights):
        raise ValueError(f'scheduler CosineAnnealingRestartLR: periods {periods} and restart_weights {weights} '
                         'must have the same length')
    # BasicSR's scheduler fails with a bare TypeError once the iteration passes sum(periods).
    if total_iter is not None and sum(periods) < total_iter:
        raise ValueError(f'scheduler CosineAnnealingRestartLR: periods {periods} sum to {sum(periods)} iterations '
                         f'but training runs {total_iter}; lengthen the periods')
    return CosineAnnealingRestartLR(optimizer, **options)


def _constant(optimizer):
    # A real scheduler object, so that models step and checkpoint it like any other.
    return torch_schedulers.ConstantLR(optimizer, factor=1.0, total_iters=0)


#: Scheduler type -> (builder, class whose signature lists the accepted options).
SCHEDULERS = {
    'MultiStepRestartLR': (_multistep, MultiStepRestartLR),
    'MultiStepLR': (_multistep, MultiStepRestartLR),  # BasicSR's alias
    'CosineAnnealingRestartLR': (_cosine_restart, CosineAnnealingRestartLR),
    'CosineAnnealingLR': (CosineDecayLR, CosineDecayLR),
    'none': (_constant, _constant),
}


def build_scheduler(optimizer, sched_opt, total_iter=None):
    """Build an iteration-wise learning-rate scheduler from an option dict.

    Args:
        optimizer (torch.optim.Optimizer): the optimizer whose groups it drives (each group
            follows the curve relative to its own initial lr).
        sched_opt (dict | None): ``type`` and its options:
            ``MultiStepRestartLR`` (alias ``MultiStepLR``): milestones, gamma, restarts, restart_weights;
            ``CosineAnnealingRestartLR``: periods, restart_weights, eta_min;
            ``CosineAnnealingLR``: T_max (default ``total_iter``), eta_min — cosine from the
            initial lr to eta_min over T_max iterations, then flat (the CLIP-IQA+ recipe;
            :class:`CosineDecayLR`);
            ``none`` (or a None dict): a constant learning rate.
        total_iter (int, optional): training length: the default T_max of CosineAnnealingLR, and
            checked against the sum of CosineAnnealingRestartLR's periods.

    Returns:
        a ``torch.optim.lr_scheduler.LRScheduler``.
    """
    options = dict(sched_opt or {'type': 'none'})
    type_name = options.pop('type', None)
    if type_name is None:
        raise ValueError(f'scheduler: no "type" given; supported: {sorted(SCHEDULERS)}')
    if type_name not in SCHEDULERS:
        raise ValueError(f'scheduler: unknown type {type_name!r}; supported: {sorted(SCHEDULERS)}')
    build, signature_of = SCHEDULERS[type_name]
    _check_options('scheduler', type_name, signature_of, options, skip=('optimizer', 'last_epoch', 'verbose'))
    if type_name == 'CosineAnnealingLR' and 'T_max' not in options:
        if total_iter is None:
            raise ValueError('scheduler CosineAnnealingLR: give T_max (iterations to reach eta_min) or total_iter')
        options['T_max'] = int(total_iter)
    if type_name == 'CosineAnnealingRestartLR':
        options['total_iter'] = total_iter
    return build(optimizer, **options)
