"""``train.py`` / ``test.py``: the command line read once, the options checked, the pipeline run.

BasicSR's ``parse_options`` reads the option file again after our check and applies
``--force_yml`` overrides afterwards, so they were never checked; it also prints "Disable
distributed." and reads ``sys.argv``. Here the file is read once, the overrides are applied,
the result is validated, and only then does BasicSR's part of option parsing run (distributed
set-up, seed, paths). Every user error ends in one message (rank 0 prints it) and an exit code:
2 for options, 1 for files and locks, 130 for Ctrl-C; no traceback.
"""
import argparse
import ast
import errno
import json
import logging
import os
import os.path as osp
import random
import sys
import time

import yaml

from uiqa_plugin import archs, data, losses, metrics, models, perception  # noqa: F401  (register our classes)
from uiqa_plugin.checkpoint_format import missing_clip_message, missing_clip_paths, read_checkpoint
from uiqa_plugin.checkpoint_io import CheckpointReadError, CheckpointWriteError
from uiqa_plugin.clip import ClipLoadError, load_clip_for_network, yaml_option_names
from uiqa_plugin.clip.pretrained import trusting
from uiqa_plugin.option_error import OptionError
from uiqa_plugin.options import validate_options
from uiqa_plugin.runner.basicsr_patches import fill_defaults, init_dist, patch_basicsr
from uiqa_plugin.runner.experiment_lock import ExperimentInUseError
from uiqa_plugin.runner.pipelines import test_pipeline, train_pipeline
from uiqa_plugin.runner.training_state import trust_checkpoint
from uiqa_plugin.terminal import printable
from uiqa_plugin.user_modules import import_from_argv


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


def _launched_rank():
    return int(os.environ.get('RANK', os.environ.get('LOCAL_RANK', 0)))


def exit_with_message(message, code=1, every_rank=False):
    """Show ``message`` once and exit ``code``, without a traceback.

    One process: printed on stderr. Under torchrun the message goes to the elastic error file of
    rank 0 instead, and torchrun's summary shows it as the root cause (printing it as well would
    show it twice). every_rank: every rank meets this same error (the options, checked before
    any rank talks to another); the other ranks then exit quietly with 0, so that the summary
    lists rank 0's error once instead of one copy per rank.
    """
    message = printable(message)  # option values and file names may hold terminal escapes
    rank = _launched_rank()
    error_file = os.environ.get('TORCHELASTIC_ERROR_FILE')
    if error_file and every_rank and rank != 0:
        raise SystemExit(0)
    if error_file:
        try:
            with open(error_file, 'w', encoding='utf-8') as f:
                json.dump({'message': {'message': message, 'extraInfo': {
                    'py_callstack': message, 'timestamp': str(int(time.time()))}}}, f)
        except OSError:
            error_file = None
    if rank == 0 and not error_file:
        print(message, file=sys.stderr, flush=True)
    raise SystemExit(code)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        exit_with_message(f'{self.prog}: error: {message}', 2, every_rank=True)


def parse_arguments(argv, is_train):
    """BasicSR's command line (``-opt``, ``--launcher``, ``--auto_resume``, ``--debug``, ``--force_yml``)
    and ours (``--trust-checkpoint``)."""
    parser = _ArgumentParser(prog='train.py' if is_train else 'test.py')
    parser.add_argument('-opt', required=True, help='option YAML file')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher (detected under torch.distributed.run)')
    parser.add_argument('--auto_resume', action='store_true', help='resume from the latest training state')
    parser.add_argument('--debug', action='store_true')
    parser.add_argument('--local_rank', type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument('--force_yml', nargs='+', default=None,
                        help='override options, e.g. train:total_iter=1000 logger:print_freq=10')
    parser.add_argument('--trust-checkpoint', dest='trust_checkpoint', action='store_true',
                        help='load weight files that hold Python objects (only files you trust)')
    return parser.parse_args(argv)


def _override_value(text):
    """A ``--force_yml`` value as BasicSR reads it (None, bools, numbers, lists, !!float), never evaluated as code."""
    from basicsr.utils.options import _postprocess_yml_value
    text = text.strip()
    if text.startswith('['):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise OptionError(f'--force_yml: {text!r} is not a list literal') from None
    return _postprocess_yml_value(text)


def apply_overrides(opt, entries):
    """Apply ``--force_yml`` entries ``a:b:c=value`` to ``opt``; the parents must exist."""
    for entry in entries or []:
        if entry.count('=') < 1:
            raise OptionError(f'--force_yml {entry}: expected key:subkey=value')
        keys, value = entry.split('=', 1)
        *parents, leaf = [k.strip() for k in keys.split(':')]
        node, where = opt, []
        for key in parents:
            where.append(key)
            if not isinstance(node.get(key), dict):
                raise OptionError(f'--force_yml {entry}: the option file has no block {".".join(where)}')
            node = node[key]
        node[leaf] = _override_value(value)
    return opt


def network_from_checkpoint(opt):
    """Test options without ``network_g``: the arch options stored in ``path.pretrain_network_g``, or None.

    Raises OptionError naming the checkpoint when the CLIP files it was trained with are not here."""
    ckpt_path = opt['path'].get('pretrain_network_g') if isinstance(opt.get('path'), dict) else None
    if not isinstance(ckpt_path, str) or not osp.isfile(osp.expanduser(ckpt_path)):
        return None
    # the stored options (network_g, preprocessing) pass the same checks as an option file's
    ckpt = read_checkpoint(osp.expanduser(ckpt_path), trust=bool(opt['path'].get('trust_checkpoint')))
    stored = ckpt['network_g'] if isinstance(ckpt, dict) and 'network_g' in ckpt else None
    missing = missing_clip_paths(stored) if stored else []
    if missing:  # a checkpoint from another machine: say so, not "file not found" under the option file's name
        raise OptionError(missing_clip_message(ckpt_path, missing, 'set network_g.clip_model / '
                                                                   'network_g.clip_pretrained in the option file'))
    return stored


def check_options(args, is_train):
    """Read the option file once, apply ``--force_yml``, validate; (the option dict, the arch options a test
    run takes from its checkpoint or None), or exit with the message."""
    path = args.opt
    if not osp.isfile(path):
        exit_with_message(f'error: {path}: option file not found', 2, every_rank=True)
    try:
        with open(path, encoding='utf-8') as f:
            opt = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        exit_with_message(f'error: {path}: not valid YAML ({exc})', 2, every_rank=True)
    source = path + (f' with --force_yml {" ".join(args.force_yml)}' if args.force_yml else '')
    try:
        if not isinstance(opt, dict):
            raise OptionError(f'{path}: the file must hold a mapping of options')
        apply_overrides(opt, args.force_yml)
        if opt.get('path') is None:
            opt['path'] = {}
        if args.trust_checkpoint and isinstance(opt['path'], dict):
            opt['path']['trust_checkpoint'] = True
        stored = network_from_checkpoint(opt) if not is_train and 'network_g' not in opt else None
        # The model builds the checkpoint's network (and logs that it does): check it, keep the options as given.
        validate_options(dict(opt, network_g=stored) if stored else opt, is_train=is_train, source=source)
    except ValueError as exc:  # OptionError, CheckpointReadError, a stored state dict that is not one
        exit_with_message(f'error: {exc}', 2, every_rank=True)
    return opt, stored


def complete_options(opt, args, is_train, root_path):
    """The part of BasicSR's ``parse_options`` after reading the file: distributed set-up, seed,
    dataset phases and paths (without its "Disable distributed." print)."""
    import torch
    from basicsr.utils import set_random_seed
    from basicsr.utils.dist_util import get_dist_info
    opt['dist'] = args.launcher != 'none'
    if opt['dist']:
        if args.launcher == 'slurm' and 'dist_params' in opt:
            init_dist(args.launcher, **opt['dist_params'])
        else:
            init_dist(args.launcher)
    opt['rank'], opt['world_size'] = get_dist_info()
    if opt.get('manual_seed') is None:
        opt['manual_seed'] = random.randint(1, 10000)
    set_random_seed(opt['manual_seed'] + opt['rank'])
    opt['auto_resume'], opt['is_train'], opt['root_path'] = args.auto_resume, is_train, root_path
    if args.debug and not opt['name'].startswith('debug'):
        opt['name'] = 'debug_' + opt['name']
    if opt.get('num_gpu', 'auto') == 'auto':
        opt['num_gpu'] = torch.cuda.device_count()
    for phase, dataset in opt['datasets'].items():
        dataset['phase'] = phase.split('_')[0]  # val_1, val_2, test_1...
        if 'scale' in opt:
            dataset['scale'] = opt['scale']
        for key in ('dataroot_gt', 'dataroot_lq'):
            if dataset.get(key) is not None:
                dataset[key] = osp.expanduser(dataset[key])
    for key, value in opt['path'].items():
        if value is not None and ('resume_state' in key or 'pretrain_network' in key):
            opt['path'][key] = osp.expanduser(value)
    if is_train:
        root = osp.join(root_path, 'experiments', opt['name'])
        opt['path'].update(experiments_root=root, models=osp.join(root, 'models'), log=root,
                           training_states=osp.join(root, 'training_states'),
                           visualization=osp.join(root, 'visualization'))
        if 'debug' in opt['name']:
            if 'val' in opt:
                opt['val']['val_freq'] = 8
            opt['logger']['print_freq'] = 1
            opt['logger']['save_checkpoint_freq'] = 8
    else:
        root = osp.join(root_path, 'results', opt['name'])
        opt['path'].update(results_root=root, log=root, visualization=osp.join(root, 'visualization'))
    return fill_defaults(opt)


class _RecordList(logging.Handler):
    """Keeps the log records it gets (the CLIP load, made before the log file exists)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []

    def emit(self, record):
        self.records.append(record)


def load_network_clip(opt, stored=None):
    """Load the CLIP of ``network_g`` (else of ``stored``, the checkpoint's arch options) before BasicSR creates
    experiment folders; the log records of the load."""
    logger = logging.getLogger('basicsr')
    captured, level, propagate = _RecordList(), logger.level, logger.propagate
    logger.addHandler(captured)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # kept for the log file, not printed by a handler of the root logger
    try:
        with trusting(trust_checkpoint(opt)):  # a TorchScript archive is read as data unless the user vouches
            load_clip_for_network(opt.get('network_g') or stored)
    except ClipLoadError as exc:
        exit_with_message(f'error: {exc.message(yaml_option_names())}', 2, every_rank=True)
    finally:
        logger.removeHandler(captured)
        logger.setLevel(level)
        logger.propagate = propagate
    return captured.records


def _resume_hint(args):
    return f'resume with: python {sys.argv[0]} -opt {args.opt} --auto_resume'


def run_pipeline(is_train, argv=None):
    """Check the command line and options, fix BasicSR's runner and run the train or test pipeline
    in the working directory."""
    argv = import_from_argv(launcher_args(sys.argv[1:] if argv is None else list(argv)))
    args = parse_arguments(argv, is_train)
    opt, stored = check_options(args, is_train)
    early_records = load_network_clip(opt, stored)  # a missing or wrong CLIP fails here, before any folder is made
    patch_basicsr()  # BasicSR's models call some of its functions (model_to_device)
    saved = ' (the checkpoints saved so far are intact; ' + _resume_hint(args) + ')' if is_train else ''
    try:
        opt = complete_options(opt, args, is_train, os.getcwd())
        if is_train:
            train_pipeline(opt, args.opt, early_records)
        else:
            test_pipeline(opt, early_records)
    except OptionError as exc:  # found once the data is built (e.g. a batch larger than the training set)
        exit_with_message(f'error: {exc}', 2)
    except (CheckpointReadError, ExperimentInUseError) as exc:  # the message says it all
        exit_with_message(f'error: {exc}', 1)
    except CheckpointWriteError as exc:
        exit_with_message(f'error: {exc}{saved}', 1)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise
        where = exc.filename or 'a file'
        exit_with_message(f'error: cannot write {where}: {exc.strerror} (free space in, or make writable, '
                          f'{osp.dirname(osp.abspath(where)) if exc.filename else "the output folder"}){saved}', 1)
    except KeyboardInterrupt:
        exit_with_message('interrupted (Ctrl-C).' + (' The checkpoints saved so far are intact; ' + _resume_hint(args)
                                                     if is_train else ''), 130)
