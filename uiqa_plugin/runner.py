"""What our entry points change in BasicSR's runner, each a small replacement of one function.

- ``init_dist``: BasicSR always uses NCCL and CUDA; we use gloo on CPU and set the CUDA device by LOCAL_RANK.
- ``launcher_args``: torchrun passes no ``--launcher``; we detect its environment. The old
  ``torch.distributed.launch`` passes ``--local-rank``, which BasicSR's parser rejects; we drop it.
- ``load_resume_state``: BasicSR maps training states to CUDA; we map to the device in use.
- ``build_dataloader``: adds our collate (clear errors for unequal image sizes) and shards
  validation sets across ranks (the model gathers the predictions).
"""
import math
import os
import os.path as osp
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


def load_resume_state(opt):
    """The training state to resume from (auto: the latest under experiments/<name>), on the device in use."""
    from basicsr.utils import check_resume, scandir
    path = None
    if opt['auto_resume']:
        state_dir = osp.join(opt['root_path'], 'experiments', opt['name'], 'training_states')
        if osp.isdir(state_dir):
            states = [int(float(s.split('.state')[0])) for s in scandir(state_dir, suffix='state', recursive=False)]
            if states:
                path = osp.join(state_dir, f'{max(states)}.state')
                opt['path']['resume_state'] = path
    elif opt['path'].get('resume_state'):
        path = opt['path']['resume_state']
    if path is None:
        return None
    state = torch.load(path, map_location=map_location(), weights_only=False)
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
    opt.setdefault('path', {})
    if opt.get('is_train'):
        logger = opt.setdefault('logger', {})
        logger.setdefault('print_freq', 100)
        logger.setdefault('save_checkpoint_freq', 5000)
    return opt


def _parse_options_with_defaults(parse_options):
    def wrapped(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        return fill_defaults(opt), args
    wrapped.__wrapped__ = parse_options
    return wrapped


def patch_basicsr():
    """Install the replacements above into BasicSR's runner modules (idempotent)."""
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options
    basicsr.utils.options.init_dist = init_dist
    for module in (basicsr.train, basicsr.test):
        if not hasattr(module.parse_options, '__wrapped__'):
            module.parse_options = _parse_options_with_defaults(module.parse_options)
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.build_dataloader = build_dataloader
    basicsr.test.build_dataloader = build_dataloader


def iterations_per_epoch(num_samples, batch_size, world_size):
    return math.ceil(num_samples / (batch_size * world_size))


def run_pipeline(is_train, argv=None):
    """Validate the option file, fix BasicSR's runner and run its train or test pipeline in the working directory."""
    import sys
    import uiqa_plugin  # noqa: F401  (basicsr compatibility + registrations)
    from uiqa_plugin.options import validate_option_file
    argv = launcher_args(sys.argv[1:] if argv is None else list(argv))
    opt = validate_option_file(argv, is_train=is_train)
    from uiqa_plugin.clip_backbone import ClipLoadError, load_clip_for_network, yaml_option_names
    try:  # a missing or wrong CLIP fails here, before BasicSR creates experiment folders
        load_clip_for_network((opt or {}).get('network_g'))
    except ClipLoadError as exc:
        sys.exit(f'error: {exc.message(yaml_option_names())}')
    patch_basicsr()
    sys.argv = [sys.argv[0]] + argv  # BasicSR's parser reads sys.argv
    if is_train:
        from basicsr.train import train_pipeline
        train_pipeline(os.getcwd())
    else:
        from basicsr.test import test_pipeline
        test_pipeline(os.getcwd())
