"""The train and test pipelines of our entry points: BasicSR's, on options parsed once.

As ``basicsr.train.train_pipeline`` / ``basicsr.test.test_pipeline`` (``cudnn.benchmark``, the
experiment folders, the log, tensorboard, the data loaders, the model), plus: a lock on the
experiment folder (taken before BasicSR renames an old one), validation sets sharded across
ranks only for models that gather (``model_contract``), and a log whose terminal side stays
short (BasicSR's banner, the option dump and the network print go to the log file only).
"""
import logging
import math
import os.path as osp
import re

import torch

from uiqa_plugin.clip.pretrained import trusting
from uiqa_plugin.metrics.per_image import per_image_metrics
from uiqa_plugin.runner.basicsr_patches import build_dataloader
from uiqa_plugin.runner.experiment_lock import ExperimentLock
from uiqa_plugin.runner.loop import train_loop
from uiqa_plugin.runner.model_contract import gathers_validation
from uiqa_plugin.runner.training_state import load_resume_state, trust_checkpoint

FILE_ONLY = {'file_only': True}  # ``extra`` of a log record meant for the log file, not the terminal


class TerminalFilter(logging.Filter):
    """Keeps the terminal short: drops records marked FILE_ONLY and the network print of BasicSR's
    ``print_network`` (its one-line "Network: ..., with parameters: N" stays)."""

    def filter(self, record):
        if getattr(record, 'file_only', False):
            return False
        return not (record.funcName == 'print_network' and not str(record.msg).startswith('Network:'))


class TestRunFilter(logging.Filter):
    """In a test run BasicSR's models log "Best: X @ <run name> iter" after each metric: the best
    over one evaluation is the value itself, and the run name is not an iteration. Removed."""

    def __init__(self, run_name):
        super().__init__()
        self.pattern = re.compile(r'\tBest: \S+ @ ' + re.escape(str(run_name)) + ' iter')

    def filter(self, record):
        if isinstance(record.msg, str) and 'Best: ' in record.msg:
            record.msg = self.pattern.sub('', record.msg)
        return True


def open_log(opt, log_file, early_records=()):
    """BasicSR's root logger with ``log_file``; the banner and options go to the file only.

    early_records: log records made before the log file existed (the CLIP load of the option
    check), written first so that the log says where CLIP came from.
    """
    from basicsr.utils import get_env_info, get_root_logger
    from basicsr.utils.options import dict2str
    logger = get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=log_file)
    for handler in logger.handlers:
        if not isinstance(handler, logging.FileHandler) and not any(isinstance(f, TerminalFilter)
                                                                     for f in handler.filters):
            handler.addFilter(TerminalFilter())
    logger.info(get_env_info(), extra=FILE_ONLY)
    logger.info(dict2str(opt), extra=FILE_ONLY)
    logger.info(f'Log file (with the options and the network): {log_file}')
    if opt['rank'] == 0:
        for record in early_records:
            logger.handle(record)
    return logger


def create_dataloaders(opt, logger, shard):
    """BasicSR's create_train_val_dataloader, with validation sets sharded across ranks when ``shard``."""
    from basicsr.data import build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    train_loader = train_sampler = total_iters = None
    val_loaders = []
    for phase, dataset_opt in opt['datasets'].items():
        if phase == 'train':
            ratio = dataset_opt.get('dataset_enlarge_ratio', 1)
            train_set = build_dataset(dataset_opt)
            train_sampler = EnlargedSampler(train_set, opt['world_size'], opt['rank'], ratio)
            train_loader = build_dataloader(train_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                            sampler=train_sampler, seed=opt['manual_seed'])
            per_epoch = math.ceil(len(train_set) * ratio / (dataset_opt['batch_size_per_gpu'] * opt['world_size']))
            total_iters = int(opt['train']['total_iter'])
            logger.info('Training statistics:'
                        f'\n\tNumber of train images: {len(train_set)}'
                        f'\n\tDataset enlarge ratio: {ratio}'
                        f'\n\tBatch size per gpu: {dataset_opt["batch_size_per_gpu"]}'
                        f'\n\tWorld size (gpu number): {opt["world_size"]} (batch per iteration: '
                        f'{dataset_opt["batch_size_per_gpu"] * opt["world_size"]})'
                        f'\n\tRequire iter number per epoch: {per_epoch}'
                        f'\n\tTotal epochs: {math.ceil(total_iters / per_epoch)}; iters: {total_iters}.')
        else:
            val_set = build_dataset(dataset_opt)
            val_loaders.append(build_dataloader(val_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                                seed=opt['manual_seed'], shard=shard))
            logger.info(f'Number of val images/folders in {dataset_opt["name"]}: {len(val_set)}')
    return train_loader, train_sampler, val_loaders, total_iters


def _model_class(opt):
    from basicsr.utils.registry import MODEL_REGISTRY
    return MODEL_REGISTRY.get(opt['model_type'])


def train_pipeline(opt, opt_path, early_records=()):
    """Train as ``basicsr.train.train_pipeline`` does, on the parsed options ``opt`` (file ``opt_path``)."""
    import basicsr.train as bt
    from basicsr.models import build_model
    from basicsr.utils import get_time_str, make_exp_dirs, mkdir_and_rename
    from basicsr.utils.options import copy_opt_file
    torch.backends.cudnn.benchmark = True  # BasicSR's choice: kernels picked by timing (GPU runs are not bit-exact)
    lock = None
    if opt['rank'] == 0:  # before BasicSR renames a folder that another run may be writing into
        lock = ExperimentLock(osp.join(opt['root_path'], 'experiments'), opt['name']).acquire()
    try:
        resume_state = load_resume_state(opt)
        skipped = opt.pop('resume_skipped', [])
        if resume_state is None:
            make_exp_dirs(opt)
            if opt['logger'].get('use_tb_logger') and 'debug' not in opt['name'] and opt['rank'] == 0:
                mkdir_and_rename(osp.join(opt['root_path'], 'tb_logger', opt['name']))
        copy_opt_file(opt_path, opt['path']['experiments_root'])
        log_file = osp.join(opt['path']['log'], f"train_{opt['name']}_{get_time_str()}.log")
        logger = open_log(opt, log_file, early_records)
        for message in skipped:
            logger.warning(f'auto_resume: {message}')
        tb_logger = bt.init_tb_loggers(opt)
        train_loader, train_sampler, val_loaders, total_iters = create_dataloaders(
            opt, logger, shard=gathers_validation(_model_class(opt)))
        with trusting(trust_checkpoint(opt)):
            model = build_model(opt)
        train_loop(opt, model, train_loader, train_sampler, val_loaders, total_iters, resume_state, tb_logger, logger)
        if tb_logger:
            tb_logger.close()
    finally:
        if lock is not None:
            lock.release()


def test_pipeline(opt, early_records=()):
    """Evaluate as ``basicsr.test.test_pipeline`` does, on the parsed options ``opt``."""
    from basicsr.data import build_dataset
    from basicsr.models import build_model
    from basicsr.utils import get_time_str, make_exp_dirs
    torch.backends.cudnn.benchmark = True  # as BasicSR's test_pipeline
    make_exp_dirs(opt)
    logger = open_log(opt, osp.join(opt['path']['log'], f"test_{opt['name']}_{get_time_str()}.log"), early_records)
    if not any(isinstance(f, TestRunFilter) for f in logger.filters):
        logger.addFilter(TestRunFilter(opt['name']))
    shard = gathers_validation(_model_class(opt))
    test_loaders = []
    for _, dataset_opt in sorted(opt['datasets'].items()):
        test_set = build_dataset(dataset_opt)
        test_loaders.append(build_dataloader(test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                             seed=opt['manual_seed'], shard=shard))
        logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")
    with trusting(trust_checkpoint(opt)):  # a TorchScript CLIP archive is read as data unless the user vouches
        model = build_model(opt)
    for test_loader in test_loaders:
        logger.info(f"Testing {test_loader.dataset.opt['name']}...")
        # results/<name>/<set>_metrics.csv: one row per image, every metric of val.metrics
        with per_image_metrics(model, test_loader, opt['path']['results_root']):
            model.validation(test_loader, current_iter=opt['name'], tb_logger=None, save_img=opt['val']['save_img'])
