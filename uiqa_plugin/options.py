"""Validation of option YAMLs before any work starts: unknown keys, wrong types, missing files.

BasicSR reads options lazily, so a typo surfaces hours into a run (or never: an unknown
key is silently ignored). ``validate_options`` checks the whole file up front and raises
one ``OptionError`` that lists every problem with its dotted key.
"""
import difflib
import inspect
import os.path as osp

import yaml

TOP_LEVEL = {
    'name': str, 'model_type': str, 'num_gpu': (int, str), 'manual_seed': int, 'datasets': dict,
    'network_g': dict, 'path': dict, 'train': dict, 'val': dict, 'logger': dict, 'dist_params': dict,
    'find_unused_parameters': bool, 'scale': int,
}
TRAIN_KEYS = {'total_iter': int, 'warmup_iter': int, 'optim_g': dict, 'scheduler': dict, 'grad_clip_norm': (int, float),
              'ema_decay': (int, float)}
VAL_KEYS = {'val_freq': (int, float), 'save_img': bool, 'metrics': dict, 'key_metric': str, 'pbar': bool,
            'save_predictions': bool}
LOGGER_KEYS = {'print_freq': int, 'save_checkpoint_freq': (int, float), 'use_tb_logger': bool, 'wandb': dict}
PATH_KEYS = {'pretrain_network_g': (str, type(None)), 'strict_load_g': bool, 'param_key_g': str,
             'resume_state': (str, type(None)), 'ignore_resume_networks': (list, type(None))}
# Keys every dataset accepts (BasicSR's loader options); the dataset classes check their own keys.
DATASET_COMMON = {'name': str, 'type': str, 'phase': str, 'batch_size_per_gpu': int, 'num_worker_per_gpu': int,
                  'dataset_enlarge_ratio': int, 'prefetch_mode': (str, type(None)), 'pin_memory': bool,
                  'persistent_workers': bool, 'use_shuffle': bool}


class OptionError(ValueError):
    """The option file has problems; the message lists each with its dotted key."""


def _type_name(types):
    types = types if isinstance(types, tuple) else (types,)
    return ' or '.join('null' if t is type(None) else t.__name__ for t in types)


def _check_block(block, schema, where, problems, extra_ok=lambda key: False):
    if not isinstance(block, dict):
        problems.append(f'{where}: expected a mapping, got {type(block).__name__}')
        return
    prefix = f'{where}.' if where else ''
    for key, value in block.items():
        if key in schema:
            types = schema[key]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(
                    types, tuple) else (types,))):
                problems.append(f'{prefix}{key}: expected {_type_name(types)}, got {value!r}')
        elif not extra_ok(key):
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            problems.append(f'{prefix}{key}: unknown key{hint}')


def _accepted_kwargs(cls):
    """Keyword names a class's __init__ accepts, following **kwargs up the MRO."""
    names = set()
    for klass in inspect.getmro(cls):
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names.update(n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != 'self')
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names, False
    return names, True


def _check_network(net_opt, where, problems):
    from basicsr.utils.registry import ARCH_REGISTRY
    arch_type = net_opt.get('type')
    if arch_type not in ARCH_REGISTRY:
        close = difflib.get_close_matches(str(arch_type), list(ARCH_REGISTRY.keys()), n=3)
        problems.append(f'{where}.type: unknown arch {arch_type!r}' + (f' (close: {", ".join(close)})' if close else ''))
        return
    accepted, open_ended = _accepted_kwargs(ARCH_REGISTRY.get(arch_type))
    if not open_ended:
        for key in net_opt:
            if key != 'type' and key not in accepted:
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                problems.append(f'{where}.{key}: {arch_type} has no option {key!r}' +
                                (f' (did you mean {close[0]!r}?)' if close else ''))
    pretrained = net_opt.get('clip_pretrained')
    if isinstance(pretrained, str) and (pretrained.endswith(('.pt', '.pth', '.bin')) or '/' in pretrained):
        if not osp.isfile(osp.expanduser(pretrained)):
            problems.append(f'{where}.clip_pretrained: file not found: {pretrained}')


def _check_dataset(phase, ds_opt, problems):
    from basicsr.utils.registry import DATASET_REGISTRY
    where = f'datasets.{phase}'
    if not isinstance(ds_opt, dict):
        problems.append(f'{where}: expected a mapping')
        return
    ds_type = ds_opt.get('type')
    if ds_type not in DATASET_REGISTRY:
        close = difflib.get_close_matches(str(ds_type), list(DATASET_REGISTRY.keys()), n=3)
        problems.append(f'{where}.type: unknown dataset {ds_type!r}' + (f' (close: {", ".join(close)})' if close else ''))
    elif hasattr(DATASET_REGISTRY.get(ds_type), 'unknown_options'):
        problems.extend(f'{where}: {message}' for message in DATASET_REGISTRY.get(ds_type).unknown_options(ds_opt))
    for key, types in DATASET_COMMON.items():
        if key in ds_opt and not isinstance(ds_opt[key], types):
            problems.append(f'{where}.{key}: expected {_type_name(types)}, got {ds_opt[key]!r}')
    if phase.split('_')[0] == 'train' and 'batch_size_per_gpu' not in ds_opt:
        problems.append(f'{where}.batch_size_per_gpu: required for training')
    for key in ('dataroot', 'meta_file'):
        value = ds_opt.get(key)
        if isinstance(value, str) and not osp.exists(osp.expanduser(value)):
            problems.append(f'{where}.{key}: path not found: {value}')
    backend = ds_opt.get('io_backend') or {}
    for db in (backend.get('db_paths') or []) if isinstance(backend, dict) else []:
        if isinstance(db, str) and not osp.isdir(osp.expanduser(db)):
            problems.append(f'{where}.io_backend.db_paths: LMDB folder not found: {db}')


def validate_options(opt, is_train=True, source='options'):
    """Check a loaded option dict; raises OptionError listing every problem."""
    problems = []
    if not isinstance(opt, dict):
        raise OptionError(f'{source}: the file must hold a mapping of options')
    _check_block(opt, TOP_LEVEL, '', problems)
    for key in ('name', 'model_type', 'datasets', 'network_g'):
        if key not in opt:
            problems.append(f'{key}: required')
    if isinstance(opt.get('network_g'), dict):
        _check_network(opt['network_g'], f'network_g', problems)
    if isinstance(opt.get('datasets'), dict):
        if not opt['datasets']:
            problems.append(f'datasets: empty')
        for phase, ds_opt in opt['datasets'].items():
            if is_train and phase.split('_')[0] not in ('train', 'val'):
                problems.append(f'datasets.{phase}: training phases are train and val[_N]')
            _check_dataset(phase, ds_opt, problems)
        if is_train and 'train' not in opt['datasets']:
            problems.append(f'datasets.train: required for training')
    if is_train:
        if 'train' not in opt:
            problems.append(f'train: required for training')
        elif isinstance(opt['train'], dict):
            _check_block(opt['train'], TRAIN_KEYS, f'train', problems, extra_ok=lambda k: k.endswith('_opt'))
            for key in ('total_iter', 'optim_g'):
                if key not in opt['train']:
                    problems.append(f'train.{key}: required')
        if 'logger' not in opt:
            problems.append(f'logger: required for training (print_freq, save_checkpoint_freq)')
    if 'val' in opt:
        _check_block(opt['val'], VAL_KEYS, f'val', problems)
    if 'logger' in opt:
        _check_block(opt['logger'], LOGGER_KEYS, f'logger', problems)
    if 'path' in opt:
        _check_block(opt['path'], PATH_KEYS, f'path', problems)
        pretrain = (opt['path'] or {}).get('pretrain_network_g') if isinstance(opt['path'], dict) else None
        if isinstance(pretrain, str) and not osp.isfile(osp.expanduser(pretrain)):
            problems.append(f'path.pretrain_network_g: file not found: {pretrain}')
    if problems:
        raise OptionError(f'{source} has {len(problems)} problem(s):\n  - ' + '\n  - '.join(problems))
    return opt


def load_options(path, is_train=True):
    """Read and validate an option YAML."""
    if not osp.isfile(path):
        raise OptionError(f'{path}: option file not found')
    with open(path, encoding='utf-8') as f:
        try:
            opt = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise OptionError(f'{path}: not valid YAML ({exc})') from exc
    return validate_options(opt, is_train=is_train, source=path)


def validate_option_file(argv, is_train=True):
    """Find ``-opt PATH`` in command-line arguments and validate that file; exits with the message on error."""
    import sys
    path = None
    for i, arg in enumerate(argv):
        if arg == '-opt' and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith('-opt='):
            path = arg.split('=', 1)[1]
    if path is None:
        sys.exit('usage: -opt OPTIONS.yml is required')
    try:
        return load_options(path, is_train=is_train)
    except OptionError as exc:
        sys.exit(f'error: {exc}')
