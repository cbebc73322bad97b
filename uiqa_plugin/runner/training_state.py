"""Finding, checking and completing the training state to resume from.

A training state is the model's ``training_states/<iter>.state`` (BasicSR's: epoch, iter,
optimizers, schedulers) plus the loop's ``<iter>.loop.pth`` beside it: the random states of
every rank now and at the start of the epoch, how many batches of the epoch were trained on,
and the model's best-validation record. With both, a resumed run continues at the next batch
of the interrupted epoch with the random numbers it would have drawn.

The loop file is written first: a state whose save was cut short is unreadable and skipped,
and the loop file of the previous good state is still there.
"""
import os
import os.path as osp

import torch

from uiqa_plugin.checkpoint_io import (TRUST_HINT, CheckpointReadError, CheckpointWriteError, UnsafeCheckpointError,
                                       load_checkpoint, save_checkpoint)
from uiqa_plugin.devices import current_device
from uiqa_plugin.rank_gather import gather_objects
from uiqa_plugin.runner.model_contract import best_record
from uiqa_plugin.runner.random_states import rng_from_plain, rng_state, rng_to_plain

def trust_checkpoint(opt):
    """Whether the user vouches for this run's weight files (``--trust-checkpoint`` / ``path.trust_checkpoint``)."""
    return bool(opt.get('trust_checkpoint') or (opt.get('path') or {}).get('trust_checkpoint'))


def _state_iter(name):
    try:
        return int(float(name[:-len('.state')]))
    except ValueError:
        return None


def _check_training_state(path, models_dir, trust):
    """The training state at ``path`` and the network file saved with it; raises CheckpointReadError."""
    state = load_checkpoint(path, map_location=current_device(), trust=trust, what='training state',
                            trust_hint=TRUST_HINT)
    if not isinstance(state, dict) or 'iter' not in state or 'optimizers' not in state:
        raise CheckpointReadError(f'training state {path}: not a training state (no "iter"/"optimizers")')
    network = osp.join(models_dir, f'net_g_{state["iter"]}.pth')
    load_checkpoint(network, trust=trust, what='network file', trust_hint=TRUST_HINT)  # readable, or raise
    return state


def load_resume_state(opt):
    """The training state to resume from, on the device in use; never unpickles code.

    ``--auto_resume`` takes the latest readable state under experiments/<name>/training_states
    whose network file (models/net_g_<iter>.pth) is readable too: an unreadable latest one (a
    kill during a save, a 0-byte file) is skipped and named in ``opt['resume_skipped']``, to
    be logged. A ``path.resume_state`` given explicitly must be readable. The loop's part
    (``loop_state``) is read separately.
    """
    from basicsr.utils import check_resume
    trust = trust_checkpoint(opt)
    opt['resume_skipped'] = []
    state = None
    if opt['auto_resume']:
        state_dir = opt['path']['training_states']
        names = [n for n in (os.listdir(state_dir) if osp.isdir(state_dir) else []) if n.endswith('.state')]
        candidates = sorted(((_state_iter(n), n) for n in names if _state_iter(n) is not None), reverse=True)
        for _, name in candidates:
            path = osp.join(state_dir, name)
            try:
                state = _check_training_state(path, opt['path']['models'], trust)
            except UnsafeCheckpointError:
                raise  # a planted file is not "unreadable": stop and say so
            except CheckpointReadError as exc:
                opt['resume_skipped'].append(f'skipped {exc}')
                continue
            opt['path']['resume_state'] = path
            break
        if state is None and candidates:
            raise CheckpointReadError(f'--auto_resume: no readable training state in {state_dir}:\n  ' +
                                      '\n  '.join(opt['resume_skipped']) +
                                      '\nremove them (or the experiment folder) to start afresh')
    elif opt['path'].get('resume_state'):
        state = _check_training_state(opt['path']['resume_state'], opt['path']['models'], trust)
    if state is None:
        return None
    check_resume(opt, state['iter'])
    return state


def loop_state_path(opt, current_iter):
    return osp.join(opt['path']['training_states'], f'{current_iter}.loop.pth')


def save_loop_state(opt, model, epoch, current_iter, batches_in_epoch, epoch_rng):
    """Write the loop's part of the training state of ``current_iter``. Collective: every rank calls it."""
    rngs = gather_objects(rng_to_plain(rng_state()))
    epoch_rngs = gather_objects(rng_to_plain(epoch_rng))
    if opt['rank'] != 0:
        return
    state = {'epoch': epoch, 'iter': current_iter, 'batches_in_epoch': int(batches_in_epoch),
             'rng': rngs, 'epoch_rng': epoch_rngs, 'best_metric_results': best_record(model)}
    path = loop_state_path(opt, current_iter)
    try:
        save_checkpoint(state, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        raise CheckpointWriteError.writing('training state', path, exc) from exc


class LoopState:
    """The loop's part of a resumed state, for this rank; defaults when there is none.

    batches_in_epoch: batches of the interrupted epoch already trained on (0: resume at an
    epoch start); rng / epoch_rng: this rank's random states at the save and at the start of
    its epoch, or None (the resumed run then draws other random numbers: ``exact`` is False).
    """

    def __init__(self, batches_in_epoch=0, rng=None, epoch_rng=None, best_metric_results=None):
        self.batches_in_epoch, self.rng, self.epoch_rng = batches_in_epoch, rng, epoch_rng
        self.best_metric_results = best_metric_results

    @property
    def exact(self):
        return self.rng is not None and self.epoch_rng is not None


def load_loop_state(opt, resume_state, logger):
    """The LoopState saved with ``resume_state``; a warning says why when the resume cannot be exact."""
    path = loop_state_path(opt, resume_state['iter'])
    try:
        saved = load_checkpoint(path, map_location='cpu', trust=trust_checkpoint(opt), what='training state',
                                trust_hint=TRUST_HINT)
    except UnsafeCheckpointError:
        raise
    except CheckpointReadError as exc:
        logger.warning(f'{exc}: the resumed run restarts the epoch and draws other random numbers than an '
                       'uninterrupted one would')
        return LoopState()
    rngs, epoch_rngs = saved.get('rng') or [], saved.get('epoch_rng') or []
    loop = LoopState(int(saved.get('batches_in_epoch', 0)), best_metric_results=saved.get('best_metric_results'))
    if len(rngs) == len(epoch_rngs) == opt['world_size']:
        loop.rng, loop.epoch_rng = rng_from_plain(rngs[opt['rank']]), rng_from_plain(epoch_rngs[opt['rank']])
    else:
        logger.warning(f'{path} holds the random states of {len(rngs)} process(es), this run has '
                       f'{opt["world_size"]}: the resumed run draws other random numbers than an uninterrupted one')
    return loop


class SkipSampler(torch.utils.data.Sampler):
    """The indices of ``sampler`` after the first ``skip`` (the samples of batches already trained on)."""

    def __init__(self, sampler, skip=0):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self):
        return max(len(self.sampler) - self.skip, 0)

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)


def resume_loader(train_loader, batches_done, epoch, logger):
    """(loader, batches to replay) for the rest of an interrupted epoch: the same samples, in the same
    order, from the next batch."""
    if not batches_done:
        return train_loader, 0
    if train_loader.num_workers == 0:
        # Samples are drawn in this process from the restored random state: skip the indices only.
        skipped = SkipSampler(train_loader.sampler, batches_done * train_loader.batch_size)
        loader = torch.utils.data.DataLoader(
            train_loader.dataset, batch_size=train_loader.batch_size, sampler=skipped, num_workers=0,
            collate_fn=train_loader.collate_fn, pin_memory=train_loader.pin_memory, drop_last=True)
        return loader, 0
    # Workers draw augmentations from their own seeded states: replay the epoch's first batches to
    # reach the same worker states (their data are loaded and dropped, nothing trains on them).
    if train_loader.persistent_workers:
        logger.warning('persistent_workers: the workers\' random states carry over epochs and cannot be restored; '
                       'the resumed run draws other augmentations than an uninterrupted one')
    logger.info(f'Resuming inside epoch {epoch}: replaying its first {batches_done} batches '
                '(loading only) to restore the data workers\' random states.')
    return train_loader, batches_done
