"""What our entry points change in BasicSR's runner, each a small replacement of one function.

- ``init_dist``: BasicSR always uses NCCL and CUDA; we use gloo on CPU and set the CUDA device by LOCAL_RANK.
- ``launcher_args``: torchrun passes no ``--launcher``; we detect its environment. The old
  ``torch.distributed.launch`` passes ``--local-rank``, which BasicSR's parser rejects; we drop it.
- ``load_resume_state``: BasicSR maps training states to CUDA and unpickles them; we map to the device
  in use, read with ``weights_only`` and skip an unreadable latest state for the previous good one.
- ``build_dataloader``: adds our collate (clear errors for unequal image sizes) and shards
  validation sets across ranks (the model gathers the predictions).
- ``train_pipeline``: BasicSR's loop, plus an experiment lock, an exact resume (next batch of the
  interrupted epoch, restored random states) and one final validation at ``total_iter``.
- ``run_pipeline``: option errors, refused weight files and a locked experiment end in one message.
"""
import datetime
import logging
import math
import os
import os.path as osp
import time
from functools import partial

import torch
import torch.distributed as dist
import torch.utils.data

from uiqa_plugin.data.collate import collate_views


def init_dist(launcher, backend=None, **kwargs):
    """Start the process group from torchrun's environment: NCCL on CUDA, gloo on CPU."""
    if launcher not in ('pytorch', 'slurm'):
        raise ValueError(f'Invalid launcher type: {launcher}')
    if launcher == 'slurm':
        from basicsr.utils.dist_util import _init_dist_slurm
        return _init_dist_slurm(backend or ('nccl' if torch.cuda.is_available() else 'gloo'), **kwargs)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', os.environ.get('RANK', 0))) % torch.cuda.device_count())
        backend = backend or 'nccl'
    else:
        backend = backend or 'gloo'
    dist.init_process_group(backend=backend, **kwargs)


def launcher_args(argv, environ=os.environ):
    """argv with ``--launcher pytorch`` added under torchrun and any ``--local-rank`` removed."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ('--local-rank', '--local_rank'):
            skip = True
            continue
        if arg.startswith(('--local-rank=', '--local_rank=')):
            continue
        out.append(arg)
    launched = int(environ.get('WORLD_SIZE', '1')) > 1 and 'RANK' in environ
    if launched and '--launcher' not in out and not any(a.startswith('--launcher=') for a in out):
        out += ['--launcher', 'pytorch']
    return out


def map_location():
    return f'cuda:{torch.cuda.current_device()}' if torch.cuda.is_available() else 'cpu'


_TRUST_FLAG = [False]  # --trust-checkpoint on the command line (BasicSR's parser does not know it)


def trust_checkpoint(opt):
    """Whether the user vouches for this run's weight files (``--trust-checkpoint`` / ``path.trust_checkpoint``)."""
    return bool(_TRUST_FLAG[0] or opt.get('trust_checkpoint') or (opt.get('path') or {}).get('trust_checkpoint'))


TRUST_HINT = '--trust-checkpoint (or path.trust_checkpoint: true in the option file)'


def _state_iter(name):
    try:
        return int(float(name[:-len('.state')]))
    except ValueError:
        return None


def _check_training_state(path, models_dir, trust):
    """The training state at ``path`` and the network file saved with it; raises CheckpointReadError."""
    from uiqa_plugin.checkpoint_io import CheckpointReadError, load_checkpoint
    state = load_checkpoint(path, map_location=map_location(), trust=trust, what='training state',
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
    be logged. A ``path.resume_state`` given explicitly must be readable.
    """
    from basicsr.utils import check_resume
    from uiqa_plugin.checkpoint_io import CheckpointReadError, UnsafeCheckpointError
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


class ShardSampler(torch.utils.data.Sampler):
    """Every index exactly once over all ranks (rank r takes r, r+W, ...): no padding, no repeats."""

    def __init__(self, length, rank, world_size):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def build_dataloader(dataset, dataset_opt, num_gpu=1, dist=False, sampler=None, seed=None):
    """BasicSR's build_dataloader with our collate and sharded evaluation."""
    from basicsr.data import worker_init_fn
    from basicsr.utils.dist_util import get_dist_info
    rank, world_size = get_dist_info()
    phase = dataset_opt['phase']
    num_workers = dataset_opt.get('num_worker_per_gpu', 0)
    if phase == 'train':
        from uiqa_plugin.options import check_train_batches
        check_train_batches(dataset, dataset_opt, world_size)  # drop_last: a too large batch gives 0 iterations
        args = dict(dataset=dataset, batch_size=dataset_opt['batch_size_per_gpu'], shuffle=sampler is None,
                    num_workers=num_workers, sampler=sampler, drop_last=True)
        if seed is not None:
            args['worker_init_fn'] = partial(worker_init_fn, num_workers=num_workers, rank=rank, seed=seed)
    else:
        args = dict(dataset=dataset, batch_size=dataset_opt.get('batch_size_per_gpu', 1), shuffle=False,
                    num_workers=num_workers, drop_last=False,
                    sampler=ShardSampler(len(dataset), rank, world_size) if dist else None)
    args['collate_fn'] = collate_views
    args['pin_memory'] = dataset_opt.get('pin_memory', False)
    args['persistent_workers'] = dataset_opt.get('persistent_workers', False) and num_workers > 0
    return torch.utils.data.DataLoader(**args)


def fill_defaults(opt):
    """Defaults BasicSR's runner reads without a fallback (it raises KeyError when they are absent)."""
    if opt.get('val') is not None:
        opt['val'].setdefault('save_img', False)
        opt['val'].setdefault('suffix', None)  # SRModel reads it when saving test images
    opt.setdefault('path', {})
    if opt.get('is_train'):
        logger = opt.setdefault('logger', {})
        logger.setdefault('print_freq', 100)
        logger.setdefault('save_checkpoint_freq', 5000)
    return opt


def _parse_options_with_defaults(parse_options):
    def wrapped(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        if _TRUST_FLAG[0]:
            opt['trust_checkpoint'] = True
        return fill_defaults(opt), args
    wrapped.__wrapped__ = parse_options
    return wrapped


def _ordered_yaml_with_defaults(ordered_yaml):
    """BasicSR's YAML loader, filling the top-level keys its parser reads before any default applies."""
    def wrapped():
        loader, dumper = ordered_yaml()

        class LoaderWithDefaults(loader):
            def get_single_data(self):
                data = super().get_single_data()
                if isinstance(data, dict):
                    if data.get('path') is None:
                        data['path'] = {}
                    data.setdefault('num_gpu', 'auto')
                return data
        return LoaderWithDefaults, dumper
    wrapped.__wrapped__ = ordered_yaml
    return wrapped


def patch_basicsr():
    """Install the replacements above into BasicSR's runner modules (idempotent)."""
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options
    basicsr.utils.options.init_dist = init_dist
    if not hasattr(basicsr.utils.options.ordered_yaml, '__wrapped__'):
        basicsr.utils.options.ordered_yaml = _ordered_yaml_with_defaults(basicsr.utils.options.ordered_yaml)
    for module in (basicsr.train, basicsr.test):
        if not hasattr(module.parse_options, '__wrapped__'):
            module.parse_options = _parse_options_with_defaults(module.parse_options)
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.build_dataloader = build_dataloader
    basicsr.test.build_dataloader = build_dataloader


def iterations_per_epoch(num_samples, batch_size, world_size):
    return math.ceil(num_samples / (batch_size * world_size))


# ----------------------------------------------------------------------------- experiment lock

class ExperimentInUseError(RuntimeError):
    """Another live training writes into the same experiment folder."""


class ExperimentLock:
    """An exclusive lock on experiments/<name>, held for the life of the training process.

    The lock file sits beside the folder (``experiments/.<name>.lock``), so BasicSR's renaming of
    an old folder to ``_archived_`` cannot move it. ``flock`` is released by the kernel when the
    holder dies, so the lock of a killed run is taken over without any clean-up.
    """

    def __init__(self, experiments_dir, name):
        self.path = osp.join(experiments_dir, f'.{name}.lock')
        self.name = name
        self._file = None

    def acquire(self):
        import fcntl
        import socket
        os.makedirs(osp.dirname(self.path), exist_ok=True)
        handle = open(self.path, 'a+', encoding='utf-8')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or 'unknown process'
            handle.close()
            raise ExperimentInUseError(f'experiment {self.name!r} is in use by a running training ({holder}; lock file '
                               f'{self.path}). Wait for it to end, stop it, or give this run another name.') from None
        handle.seek(0)
        handle.truncate()
        handle.write(f'pid {os.getpid()} on {socket.gethostname()}')
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


# ----------------------------------------------------------------------------- random states

def rng_state():
    """Every random state a training step may draw from: Python, NumPy, torch (CPU and CUDA)."""
    import random

    import numpy as np
    state = {'python': random.getstate(), 'numpy': np.random.get_state(), 'torch': torch.get_rng_state()}
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    import random

    import numpy as np
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available() and len(state['cuda']) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state['cuda'])


def rng_to_plain(state):
    """The states above as tensors, lists and numbers, so that ``weights_only`` loading reads them."""
    version, internal, gauss = state['python']
    kind, keys, pos, has_gauss, cached = state['numpy']
    out = {'python': [version, list(internal), gauss], 'torch': state['torch'],
           'numpy': [kind, torch.from_numpy(keys.astype('int64')), int(pos), int(has_gauss), float(cached)]}
    if 'cuda' in state:
        out['cuda'] = list(state['cuda'])
    return out


def rng_from_plain(plain):
    import numpy as np
    version, internal, gauss = plain['python']
    kind, keys, pos, has_gauss, cached = plain['numpy']
    # Training states are loaded onto the training device; random states live on the CPU.
    state = {'python': (version, tuple(internal), gauss), 'torch': plain['torch'].cpu(),
             'numpy': (kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached)}
    if 'cuda' in plain:
        state['cuda'] = [s.cpu() for s in plain['cuda']]
    return state


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


# ----------------------------------------------------------------------------- training loop

class MessageLogger:
    """BasicSR's training log line, with an ETA that ends at 0:00:00 (BasicSR's goes to -1 day)."""

    def __init__(self, opt, start_iter, tb_logger=None):
        from basicsr.utils import get_root_logger
        self.exp_name = opt['name']
        self.max_iters = int(opt['train']['total_iter'])
        self.start_iter = start_iter
        self.use_tb_logger = opt['logger'].get('use_tb_logger') and tb_logger is not None
        self.tb_logger = tb_logger
        self.start_time = time.time()
        self.logger = get_root_logger()

    def __call__(self, log_vars):
        if log_vars.pop('rank', 0) != 0:
            return
        epoch, current_iter, lrs = log_vars.pop('epoch'), log_vars.pop('iter'), log_vars.pop('lrs')
        message = f'[{self.exp_name[:5]}..][epoch:{epoch:3d}, iter:{current_iter:8,d}, lr:('
        message += ''.join(f'{v:.3e},' for v in lrs) + ')] '
        if 'time' in log_vars:
            iter_time, data_time = log_vars.pop('time'), log_vars.pop('data_time')
            per_iter = (time.time() - self.start_time) / max(current_iter - self.start_iter, 1)
            eta = datetime.timedelta(seconds=int(per_iter * max(self.max_iters - current_iter, 0)))
            message += f'[eta: {eta}, time (data): {iter_time:.3f} ({data_time:.3f})] '
        for key, value in log_vars.items():
            message += f'{key}: {value:.4e} '
            if self.use_tb_logger and 'debug' not in self.exp_name:
                self.tb_logger.add_scalar(f'losses/{key}' if key.startswith('l_') else key, value, current_iter)
        self.logger.info(message)


def _epoch_iterator(loader, prefetch_mode, opt):
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
    if prefetch_mode in (None, 'cpu'):
        prefetcher = CPUPrefetcher(loader)
    elif prefetch_mode == 'cuda':
        prefetcher = CUDAPrefetcher(loader, opt)
    else:
        raise ValueError(f'datasets.train.prefetch_mode: {prefetch_mode!r}; use cpu, cuda or leave it out')
    prefetcher.reset()
    return prefetcher


def _resume_loader(train_loader, resume_state, logger):
    """A loader for the rest of the interrupted epoch: the same samples, in the same order, from the next batch."""
    batches_done = int(resume_state.get('batches_in_epoch', 0))
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
    logger.info(f'Resuming inside epoch {resume_state["epoch"]}: replaying its first {batches_done} batches '
                '(loading only) to restore the data workers\' random states.')
    return train_loader, batches_done


def train_pipeline(root_path):
    """BasicSR's ``train_pipeline``, made safe to interrupt and to resume exactly.

    Differences: a lock on the experiment folder; training states saved atomically with the
    random states, the position inside the epoch and the best-metric record; resume at the next
    batch of the interrupted epoch; validation before the save of the same iteration (so a
    state holds the record of that validation); the last iteration is ``total_iter`` and is
    validated once.
    """
    import basicsr.train as bt
    from basicsr.models import build_model
    from basicsr.utils import get_env_info, get_root_logger, get_time_str, make_exp_dirs, mkdir_and_rename
    from basicsr.utils.options import copy_opt_file, dict2str

    opt, args = bt.parse_options(root_path, is_train=True)
    opt['root_path'] = root_path
    lock = None
    if opt['rank'] == 0:  # before BasicSR renames a folder that another run may be writing into
        lock = ExperimentLock(osp.join(root_path, 'experiments'), opt['name']).acquire()
    try:
        resume_state = load_resume_state(opt)
        skipped = opt.pop('resume_skipped', [])
        if resume_state is None:
            make_exp_dirs(opt)
            if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
                mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
        copy_opt_file(args.opt, opt['path']['experiments_root'])
        log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
        logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
        logger.info(get_env_info())
        logger.info(dict2str(opt))
        for message in skipped:
            logger.warning(f'auto_resume: {message}')
        tb_logger = bt.init_tb_loggers(opt)
        train_loader, train_sampler, val_loaders, _, total_iters = bt.create_train_val_dataloader(opt, logger)
        model = build_model(opt)
        _train_loop(opt, model, train_loader, train_sampler, val_loaders, total_iters, resume_state, tb_logger, logger)
        if tb_logger:
            tb_logger.close()
    finally:
        if lock is not None:
            lock.release()


def _train_loop(opt, model, train_loader, train_sampler, val_loaders, total_iters, resume_state, tb_logger, logger):
    from basicsr.utils import AvgTimer
    epoch, current_iter, replay = 0, 0, 0
    loader = train_loader
    if resume_state:
        model.resume_training(resume_state)
        epoch, current_iter = resume_state['epoch'], resume_state['iter']
        logger.info(f'Resuming training from epoch: {epoch}, iter: {current_iter}.')
        loader, replay = _resume_loader(train_loader, resume_state, logger)
    msg_logger = MessageLogger(opt, current_iter, tb_logger)
    prefetch_mode = opt['datasets']['train'].get('prefetch_mode')
    val_opt = opt.get('val')
    val_freq = val_opt['val_freq'] if val_opt else None
    save_freq = opt['logger']['save_checkpoint_freq']
    logger.info(f'Start training from epoch: {epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    validated_at = None
    first_epoch = True
    while current_iter < total_iters:
        train_sampler.set_epoch(epoch)
        if first_epoch and resume_state:
            model.epoch_rng = model.resume_rng('epoch_rng')
            if replay:
                set_rng_state(model.epoch_rng)
            prefetcher = _epoch_iterator(loader, prefetch_mode, opt)
            for _ in range(replay):
                prefetcher.next()
            set_rng_state(model.resume_rng('rng'))
            batches_in_epoch = int(resume_state.get('batches_in_epoch', 0))
        else:
            model.epoch_rng = rng_state()
            prefetcher = _epoch_iterator(train_loader, prefetch_mode, opt)
            batches_in_epoch = 0
        first_epoch = False
        train_data = prefetcher.next()
        while train_data is not None and current_iter < total_iters:
            data_timer.record()
            current_iter += 1
            batches_in_epoch += 1
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
            iter_timer.record()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'rank': opt['rank'], 'epoch': epoch, 'iter': current_iter,
                            'lrs': model.get_current_learning_rate(),
                            'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)
            if val_freq and current_iter % val_freq == 0:
                for val_loader in val_loaders:
                    model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
                validated_at = current_iter
            if current_iter % save_freq == 0:
                logger.info('Saving models and training states.')
                model.batches_in_epoch = batches_in_epoch
                model.save(epoch, current_iter)
            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next() if current_iter < total_iters else None
        if current_iter < total_iters:
            epoch += 1
            if batches_in_epoch == 0:
                raise RuntimeError('the training set gives no batch (fewer samples than batch_size_per_gpu?)')
    logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - start_time))}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if val_opt and validated_at != current_iter:
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])


# ----------------------------------------------------------------------------- entry point


def _option_path(argv):
    for i, arg in enumerate(argv):
        if arg == '-opt' and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith('-opt='):
            return arg.split('=', 1)[1]
    return None


def _launched_rank():
    return int(os.environ.get('RANK', os.environ.get('LOCAL_RANK', 0)))


def _exit_with_message(message, code=1):
    """Print ``message`` once (rank 0) and exit ``code`` on every rank, without a traceback.

    Under torchrun the message also goes to the elastic error file, so torchrun's summary shows
    it as the root cause instead of "To enable traceback see ...".
    """
    import json
    import sys
    error_file = os.environ.get('TORCHELASTIC_ERROR_FILE')
    if error_file:
        try:
            with open(error_file, 'w', encoding='utf-8') as f:
                json.dump({'message': {'message': message, 'extraInfo': {
                    'py_callstack': message, 'timestamp': str(int(time.time()))}}}, f)
        except OSError:
            pass
    if _launched_rank() == 0:
        print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)


def _network_from_checkpoint(opt, source):
    """Test options without ``network_g`` but with ``path.pretrain_network_g``: the checkpoint's arch options."""
    from uiqa_plugin.checkpoint_io import load_checkpoint
    path_opt = opt.get('path') if isinstance(opt.get('path'), dict) else {}
    ckpt_path = path_opt.get('pretrain_network_g')
    if not isinstance(ckpt_path, str) or not osp.isfile(osp.expanduser(ckpt_path)):
        return
    ckpt = load_checkpoint(osp.expanduser(ckpt_path), trust=trust_checkpoint(opt),
                           trust_hint=TRUST_HINT)
    if isinstance(ckpt, dict) and isinstance(ckpt.get('network_g'), dict):
        opt['network_g'] = dict(ckpt['network_g'])


def check_options(argv, is_train):
    """Read and validate the option file named by ``-opt``; the option dict, or exit with the message."""
    import yaml
    from uiqa_plugin.checkpoint_io import CheckpointReadError
    from uiqa_plugin.options import OptionError, validate_options
    path = _option_path(argv)
    if path is None:
        _exit_with_message('usage: -opt OPTIONS.yml is required', 2)
    if not osp.isfile(path):
        _exit_with_message(f'error: {path}: option file not found', 2)
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        _exit_with_message(f'error: {path}: not valid YAML ({exc})', 2)
    try:
        if isinstance(opt, dict) and isinstance(opt.get('path'), dict):
            opt['path'] = dict(opt['path'])
            opt['path'].pop('trust_checkpoint', None)  # ours, read by the runner (see trust_checkpoint)
            if not is_train and 'network_g' not in opt:
                _network_from_checkpoint(opt, path)
        validate_options(opt, is_train=is_train, source=path)
    except (OptionError, CheckpointReadError) as exc:
        _exit_with_message(f'error: {exc}', 2)
    return opt


def run_pipeline(is_train, argv=None):
    """Validate the option file, fix BasicSR's runner and run its train or test pipeline in the working directory."""
    import sys
    import uiqa_plugin  # noqa: F401  (basicsr compatibility + registrations)
    from uiqa_plugin.checkpoint_io import CheckpointReadError
    from uiqa_plugin.models.iqa_model import CheckpointWriteError
    from uiqa_plugin.options import OptionError
    from uiqa_plugin.user_modules import import_from_argv
    argv = import_from_argv(launcher_args(sys.argv[1:] if argv is None else list(argv)))
    if '--trust-checkpoint' in argv:
        argv.remove('--trust-checkpoint')
        _TRUST_FLAG[0] = True
    opt = check_options(argv, is_train)
    from uiqa_plugin.clip_backbone import ClipLoadError, load_clip_for_network, yaml_option_names
    try:  # a missing or wrong CLIP fails here, before BasicSR creates experiment folders
        load_clip_for_network(opt.get('network_g'))
    except ClipLoadError as exc:
        _exit_with_message(f'error: {exc.message(yaml_option_names())}', 2)
    patch_basicsr()
    sys.argv = [sys.argv[0]] + argv  # BasicSR's parser reads sys.argv
    try:
        if is_train:
            train_pipeline(os.getcwd())
        else:
            from basicsr.test import test_pipeline
            test_pipeline(os.getcwd())
    except OptionError as exc:  # found once the data is built (e.g. a batch larger than the training set)
        _exit_with_message(f'error: {exc}', 2)
    except (CheckpointReadError, CheckpointWriteError, ExperimentInUseError) as exc:  # the message says it all
        _exit_with_message(f'error: {exc}', 1)
