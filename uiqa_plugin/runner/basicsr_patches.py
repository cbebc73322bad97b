"""What the runner replaces in BasicSR, each a small replacement of one function.

Our entry points (``train.py``, ``test.py``) call ``patch_basicsr`` and run their own pipelines
(``runner.pipelines``); a user's own BasicSR script gets the same fixes with one line,
``import uiqa_plugin.runner; uiqa_plugin.runner.patch_basicsr()``.

- ``init_dist``: BasicSR always uses NCCL and CUDA; we use gloo on CPU and set the CUDA device by LOCAL_RANK.
- ``BaseModel.model_to_device``: BasicSR passes ``device_ids=[torch.cuda.current_device()]`` to
  DDP, which fails without a GPU ("Found no NVIDIA driver"); on the CPU we pass none (gloo).
- ``load_resume_state``: BasicSR maps training states to CUDA and unpickles them; we map to the device
  in use, read with ``weights_only`` and skip an unreadable latest state for the previous good one.
- ``build_dataloader``: adds our collate (clear errors for unequal image sizes) and, when asked
  (``shard=True``, for models whose validation gathers across ranks), shards validation sets.
- ``parse_options`` / ``ordered_yaml``: fill the defaults BasicSR reads without a fallback.
"""
import os
from functools import partial

import torch
import torch.distributed as dist
import torch.utils.data
from torch.nn.parallel import DataParallel, DistributedDataParallel

from uiqa_plugin.data.collate import collate_views
from uiqa_plugin.options import check_train_batches
from uiqa_plugin.runner.training_state import load_resume_state


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


def model_to_device(self, net):
    """BaseModel.model_to_device, with DDP on the CPU (no ``device_ids``) as on GPUs."""
    net = net.to(self.device)
    if self.opt['dist']:
        device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
        net = DistributedDataParallel(net, device_ids=device_ids,
                                      find_unused_parameters=self.opt.get('find_unused_parameters', False))
    elif self.opt['num_gpu'] > 1:
        net = DataParallel(net)
    return net


class ShardSampler(torch.utils.data.Sampler):
    """Every index exactly once over all ranks (rank r takes r, r+W, ...): no padding, no repeats."""

    def __init__(self, length, rank, world_size):
        self.indices = list(range(rank, length, world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def build_dataloader(dataset, dataset_opt, num_gpu=1, dist=False, sampler=None, seed=None, shard=False):
    """BasicSR's build_dataloader with our collate; evaluation sets sharded across ranks when ``shard``."""
    from basicsr.data import worker_init_fn
    from basicsr.utils.dist_util import get_dist_info
    rank, world_size = get_dist_info()
    phase = dataset_opt['phase']
    num_workers = dataset_opt.get('num_worker_per_gpu', 0)
    if phase == 'train':
        check_train_batches(dataset, dataset_opt, world_size)  # drop_last: a too large batch gives 0 iterations
        args = dict(dataset=dataset, batch_size=dataset_opt['batch_size_per_gpu'], shuffle=sampler is None,
                    num_workers=num_workers, sampler=sampler, drop_last=True)
        if seed is not None:
            args['worker_init_fn'] = partial(worker_init_fn, num_workers=num_workers, rank=rank, seed=seed)
    else:
        args = dict(dataset=dataset, batch_size=dataset_opt.get('batch_size_per_gpu', 1), shuffle=False,
                    num_workers=num_workers, drop_last=False,
                    sampler=ShardSampler(len(dataset), rank, world_size) if dist and shard else None)
    args['collate_fn'] = collate_views
    args['pin_memory'] = dataset_opt.get('pin_memory', False)
    args['persistent_workers'] = dataset_opt.get('persistent_workers', False) and num_workers > 0
    return torch.utils.data.DataLoader(**args)


def fill_defaults(opt):
    """Defaults BasicSR's runner reads without a fallback (it raises KeyError when they are absent)."""
    if opt.get('val') is not None:
        opt['val'].setdefault('save_img', False)
        opt['val'].setdefault('suffix', None)  # SRModel reads it when saving test images
    if opt.get('path') is None:
        opt['path'] = {}
    opt.setdefault('num_gpu', 'auto')
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
    """Install the replacements above into BasicSR's modules (idempotent)."""
    import basicsr.models.base_model
    import basicsr.test
    import basicsr.train
    import basicsr.utils.options
    basicsr.utils.options.init_dist = init_dist
    basicsr.models.base_model.BaseModel.model_to_device = model_to_device
    if not hasattr(basicsr.utils.options.ordered_yaml, '__wrapped__'):
        basicsr.utils.options.ordered_yaml = _ordered_yaml_with_defaults(basicsr.utils.options.ordered_yaml)
    for module in (basicsr.train, basicsr.test):
        if not hasattr(module.parse_options, '__wrapped__'):
            module.parse_options = _parse_options_with_defaults(module.parse_options)
    basicsr.train.load_resume_state = load_resume_state
    basicsr.train.build_dataloader = build_dataloader
    basicsr.test.build_dataloader = build_dataloader
