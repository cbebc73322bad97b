"""Validation of option YAMLs before any work starts: unknown keys, wrong types, missing files.

BasicSR reads options lazily, so a typo surfaces hours into a run (or never: an unknown
key is silently ignored). ``validate_options`` checks the whole file up front and raises
one ``OptionError`` that lists every problem with its dotted key.

How strict depends on who owns the part being checked:

- our models (``IQAModel``), archs and datasets: every key is known, an unknown one is an
  error (with a "did you mean");
- BasicSR's models (``SRModel``, ``ESRGANModel``, ``RealESRGANModel``...) and users' own
  models read keys of their own (``network_d``, ``train.net_d_iters``, ``val.suffix``, the
  Real-ESRGAN degradation keys...): those are left to them. What every model shares is
  still checked: registered types (model, archs and their keyword arguments, datasets,
  losses, metrics, optimizers and schedulers), numbers that must be positive, files.

``check_environment=False`` skips what depends on this machine (data and weight files,
GPUs), e.g. to check a recipe written for another machine.
"""
import difflib
import inspect
import math
import os.path as osp
import re

import yaml

from uiqa_plugin.checkpoint_io import looks_like_path
from uiqa_plugin.devices import check_device  # noqa: F401 (uiqa-score and metric options check devices here)
from uiqa_plugin.option_error import OptionError
from uiqa_plugin.option_rules import did_you_mean, rule_problems
from uiqa_plugin.prompts import resolve_attributes
from uiqa_plugin.user_modules import (IMPORTED, UserModuleError, import_user_modules, split_names,
                                      unknown_arch_message)

# Torch, BasicSR and the modules that need them (transforms, datasets, optimizers, metrics) are imported
# inside the checks that use them: `python -m uiqa_plugin.options --help`, uiqa-score's option checks and
# an option file with a typo answer before torch has loaded (seconds).

TOP_LEVEL = {
    'name': str, 'model_type': str, 'num_gpu': (int, str), 'manual_seed': int, 'datasets': dict,
    'network_g': dict, 'path': dict, 'train': dict, 'val': dict, 'logger': dict, 'dist_params': dict,
    'find_unused_parameters': bool, 'scale': int, 'imports': (list, str),
}
#: top-level keys of BasicSR's own models (type-checked; any other key is left to the model)
BASICSR_TOP_LEVEL = dict(TOP_LEVEL, network_d=dict)
TRAIN_KEYS = {'total_iter': int, 'warmup_iter': int, 'optim_g': dict, 'scheduler': dict, 'grad_clip_norm': (int, float),
              'ema_decay': (int, float)}
VAL_KEYS = {'val_freq': (int, float), 'save_img': bool, 'metrics': dict, 'key_metric': str, 'pbar': bool,
            'save_predictions': bool}
BASICSR_VAL_KEYS = dict(VAL_KEYS, suffix=(str, type(None)))
LOGGER_KEYS = {'print_freq': int, 'save_checkpoint_freq': (int, float), 'use_tb_logger': bool, 'wandb': dict}
PATH_KEYS = {'pretrain_network_g': (str, type(None)), 'strict_load_g': bool, 'param_key_g': str,
             'resume_state': (str, type(None)), 'ignore_resume_networks': (list, type(None)),
             'trust_checkpoint': bool}
# Keys every dataset accepts (BasicSR's loader options); the dataset classes check their own keys.
DATASET_COMMON = {'name': str, 'type': str, 'phase': str, 'batch_size_per_gpu': int, 'num_worker_per_gpu': int,
                  'dataset_enlarge_ratio': int, 'prefetch_mode': (str, type(None)), 'pin_memory': bool,
                  'persistent_workers': bool, 'use_shuffle': bool}
#: schedulers BasicSR 1.4.2's BaseModel.setup_schedulers builds (for models that do not override it)
BASICSR_SCHEDULERS = ('MultiStepLR', 'MultiStepRestartLR', 'CosineAnnealingRestartLR')


# ----------------------------------------------------------------------------- small helpers

def _type_name(types):
    types = types if isinstance(types, tuple) else (types,)
    return ' or '.join('null' if t is type(None) else t.__name__ for t in types)


def _is_type(value, types):
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return False  # YAML's true is an int to Python, never to a user
    return isinstance(value, types)


def _close(word, choices, n=1):
    return difflib.get_close_matches(str(word), [str(c) for c in choices], n=n)


def _check_block(block, schema, where, problems, extra_ok=lambda key: False, strict=True):
    """Type-check the keys of ``block`` found in ``schema``; unknown keys are problems when ``strict``."""
    if not isinstance(block, dict):
        problems.append(f'{where}: expected a mapping, got {type(block).__name__}')
        return False
    prefix = f'{where}.' if where else ''
    for key, value in block.items():
        if key in schema:
            if not _is_type(value, schema[key]):
                problems.append(f'{prefix}{key}: expected {_type_name(schema[key])}, got {value!r}')
        elif strict and not extra_ok(key):
            close = _close(key, schema)
            hint = f' (did you mean {close[0]!r}?)' if close else ''
            problems.append(f'{prefix}{key}: unknown key{hint}')
    return True


def registry_lookup(registry, name):
    """``registry.get(name)`` without raising or printing: BasicSR also finds ``name + '_basicsr'``."""
    if not isinstance(name, str):
        return None
    objects = dict(iter(registry))
    return objects.get(name, objects.get(f'{name}_basicsr'))


def _unknown_type(registry, name, kind, where):
    names = [n[:-len('_basicsr')] if n.endswith('_basicsr') else n for n in registry.keys()]
    close = _close(name, names, n=3)
    return f'{where}.type: unknown {kind} {name!r}' + (f' (close: {", ".join(close)})' if close else '')


def is_ours(obj):
    """True for classes and functions of this package (checked strictly)."""
    return getattr(obj, '__module__', '').split('.')[0] == 'uiqa_plugin'


def _accepted_kwargs(func):
    """Keyword names a class's __init__ (or a function) accepts, following **kwargs up the MRO."""
    names = set()
    targets = [k.__init__ for k in inspect.getmro(func) if '__init__' in vars(k)] if inspect.isclass(func) else [func]
    for target in targets:
        params = inspect.signature(target).parameters
        names.update(n for n, p in params.items()
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != 'self')
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names, False
    return names, True


def _check_kwargs(obj, options, where, label, problems, skip=('type',)):
    accepted, open_ended = _accepted_kwargs(obj)
    if open_ended:
        return
    for key in options:
        if key not in skip and key not in accepted:
            close = _close(key, sorted(accepted))
            problems.append(f'{where}.{key}: {label} has no option {key!r}' +
                            (f' (did you mean {close[0]!r}?)' if close else ''))


def _number_problem(value, where):
    """A message when a value meant as a number is not one (``lr: 3e-3`` is a string to YAML)."""
    if isinstance(value, bool) or not isinstance(value, str):
        return None
    try:
        float(value)
    except ValueError:
        return None
    if 'e' not in value.lower():
        return f'{where}: expected a number, got the string {value!r} (remove the quotes)'
    fixed = re.sub(r'^([-+]?\d+)([eE])', r'\1.0\2', value.strip())  # 3e-3 -> 3.0e-3
    return (f'{where}: expected a number, got the string {value!r} (YAML reads exponent notation without a dot '
            f'as text: write {fixed} or !!float {value})')


# ----------------------------------------------------------------------------- parts

def network_problems(net_opt, where='network_g', check_environment=True):
    """(arch class or None, messages) for a ``network_g`` block: its type, its keys, and each value
    against the choices and ranges the arch declares (``option_rules``, see ``uiqa_plugin.option_rules``)."""
    from basicsr.utils.registry import ARCH_REGISTRY

    if not isinstance(net_opt, dict):
        return None, [f'{where}: expected a mapping {{type: ARCH, ...}}, got {net_opt!r}']
    if 'type' not in net_opt:
        return None, [f'{where}.type: required (the arch, e.g. CLIPUIQA)']
    arch = registry_lookup(ARCH_REGISTRY, net_opt['type'])
    if arch is None:
        return None, [_unknown_type(ARCH_REGISTRY, net_opt['type'], 'arch', where)]
    problems = []
    _check_kwargs(arch, net_opt, where, net_opt['type'], problems)
    problems += rule_problems(getattr(arch, 'option_rules', {}), net_opt, where)
    pretrained = net_opt.get('clip_pretrained')
    if check_environment and looks_like_path(pretrained):
        if not osp.isfile(osp.expanduser(pretrained)):
            problems.append(f'{where}.clip_pretrained: file not found: {pretrained}')
    return arch, problems


def _check_network(net_opt, where, problems, check_environment):
    arch, found = network_problems(net_opt, where, check_environment)
    problems.extend(found)
    return arch


def _transform_classes():
    from uiqa_plugin.data.transforms import TRANSFORM_REGISTRY, CenterCrop, Fragment, Resize
    return TRANSFORM_REGISTRY, {'image': Resize, 'fragments': Fragment, 'salient': CenterCrop, 'resize': Resize}


def _transform_options_problems(cls, options, where, skip=('type',)):
    problems = []
    _check_kwargs(cls, options, where, cls.__name__, problems, skip=skip)
    return problems + rule_problems(getattr(cls, 'option_rules', {}), options, where)


def preprocessing_problems(block, where):
    """Messages for the preprocessing options of a dataset (or of a checkpoint's ``preprocessing``):
    ``views`` (names and each view's options), ``resize`` and explicit ``transforms`` lists."""
    if not isinstance(block, dict):
        return [f'{where}: expected a mapping, got {block!r}'] if block is not None else []
    registry, by_view = _transform_classes()
    prefix = f'{where}.' if where else ''
    problems = []
    views = block.get('views')
    if isinstance(views, (str, list, tuple)):
        views = {v: {} for v in ([views] if isinstance(views, str) else views)} \
            if all(isinstance(v, str) for v in ([views] if isinstance(views, str) else views)) else views
    if isinstance(views, dict):
        for name, options in views.items():
            if name not in ('image', 'fragments', 'salient'):
                problems.append(f'{prefix}views.{name}: unknown view (views are image, fragments, salient)' +
                                did_you_mean(name, ('image', 'fragments', 'salient')))
            elif options is not None and not isinstance(options, dict):
                problems.append(f'{prefix}views.{name}: expected a mapping of options, got {options!r}')
            elif options:
                problems += _transform_options_problems(by_view[name], options, f'{prefix}views.{name}',
                                                        skip=('type', 'source', 'name', 'keys'))
    elif views is not None:
        problems.append(f'{prefix}views: expected view names or a mapping {{view: options}}, got {views!r}')
    if block.get('resize'):
        problems += _transform_options_problems(by_view['resize'], block['resize'], f'{prefix}resize',
                                                skip=('type', 'keys'))
    specs = block.get('transforms')
    if specs is not None and not isinstance(specs, list):
        problems.append(f'{prefix}transforms: expected a list of {{type: TRANSFORM, ...}}, got {specs!r}')
    for i, spec in enumerate(specs if isinstance(specs, list) else []):
        at = f'{prefix}transforms[{i}]'
        if not isinstance(spec, dict) or 'type' not in spec:
            problems.append(f'{at}: expected a mapping with a "type" (a transform), got {spec!r}')
            continue
        cls = registry_lookup(registry, spec['type'])
        if cls is None:
            problems.append(_unknown_type(registry, spec['type'], 'transform', at))
        else:
            problems += _transform_options_problems(cls, spec, at)
    return problems


def check_checkpoint_options(ckpt, source, imports=None):
    """The options a checkpoint carries (``network_g``, ``preprocessing``, ``view_options``), checked by the
    same rules as an option file before any model is built; returns a copy of ``network_g``.

    Raises OptionError naming ``source`` and each key. ``imports``: the user modules the checkpoint
    names, for the message about an arch no module registered.
    """
    from basicsr.utils.registry import ARCH_REGISTRY

    net_opt = ckpt.get('network_g')
    if isinstance(net_opt, dict) and isinstance(net_opt.get('type'), str) \
            and registry_lookup(ARCH_REGISTRY, net_opt['type']) is None:  # the user's own: say what to import
        raise OptionError(unknown_arch_message(source, net_opt['type'], imports))
    _, problems = network_problems(net_opt, 'network_g', check_environment=False)
    problems += preprocessing_problems(ckpt.get('preprocessing'), 'preprocessing')
    if ckpt.get('view_options') is not None:
        problems += preprocessing_problems({'views': ckpt['view_options']}, 'view_options')
    if problems:
        raise OptionError(f'{source}: the options stored in this checkpoint have {len(problems)} problem(s):\n  - ' +
                          '\n  - '.join(problems))
    return dict(ckpt['network_g'])


def _dataset_normalizes(ds_opt):
    """Whether our dataset's views come out mean/std-normalized (its default) or in [0, 1]."""
    specs = ds_opt.get('transforms')
    if isinstance(specs, list):
        return any(isinstance(s, dict) and s.get('type') == 'Normalize' and s.get('mean', ()) is not None
                   for s in specs)
    return ds_opt.get('mean', ()) is not None


def _init_default(cls, name):
    """Default of the __init__ argument ``name`` of a class, following **kwargs up the MRO (a subclass that
    forwards **kwargs takes its parent's); ``inspect.Parameter.empty`` when no __init__ on the way names it."""
    for klass in (inspect.getmro(cls) if inspect.isclass(cls) else ()):
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if name in params:
            return params[name].default
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return inspect.Parameter.empty


def _check_normalization(net_opt, arch, datasets, problems):
    """An arch that normalizes its inputs over a dataset that already did would normalize twice (and vice versa)."""
    default = _init_default(arch, 'input_normalized')
    if default is inspect.Parameter.empty:
        return
    from basicsr.utils.registry import DATASET_REGISTRY
    from uiqa_plugin.data.base_iqa_dataset import BaseIQADataset
    expects = net_opt.get('input_normalized', default)
    for phase, ds_opt in datasets.items():
        cls = registry_lookup(DATASET_REGISTRY, ds_opt.get('type')) if isinstance(ds_opt, dict) else None
        if not (inspect.isclass(cls) and issubclass(cls, BaseIQADataset)):
            continue
        gives = _dataset_normalizes(ds_opt)
        if bool(expects) != gives:
            what = ('already normalized with mean/std (the dataset default)' if gives else
                    'in [0, 1] (mean: null)')
            fix = ('set network_g.input_normalized: true, or mean: ~ and std: ~ in the dataset' if gives else
                   'set network_g.input_normalized: false, or drop mean: ~ / std: ~ from the dataset')
            problems.append(f'network_g.input_normalized: {net_opt["type"]} takes '
                            f'{"normalized inputs" if expects else "RGB in [0, 1] and normalizes them itself"} '
                            f'(input_normalized: {str(bool(expects)).lower()}), but datasets.{phase} gives images '
                            f'{what}: the images would be normalized {"twice" if gives else "never"}; {fix}')


def _check_dataset(phase, ds_opt, problems, check_environment):
    from basicsr.utils.registry import DATASET_REGISTRY
    where = f'datasets.{phase}'
    if not isinstance(ds_opt, dict):
        problems.append(f'{where}: expected a mapping')
        return
    cls = registry_lookup(DATASET_REGISTRY, ds_opt.get('type'))
    if cls is None:
        problems.append(_unknown_type(DATASET_REGISTRY, ds_opt.get('type'), 'dataset', where))
    elif hasattr(cls, 'unknown_options'):
        problems.extend(f'{where}: {message}' for message in cls.unknown_options(ds_opt))
        problems.extend(preprocessing_problems(ds_opt, where))
    for key, types in DATASET_COMMON.items():
        if key in ds_opt and not _is_type(ds_opt[key], types):
            problems.append(f'{where}.{key}: expected {_type_name(types)}, got {ds_opt[key]!r}')
    if phase.split('_')[0] == 'train' and 'batch_size_per_gpu' not in ds_opt:
        problems.append(f'{where}.batch_size_per_gpu: required for training')
    for key in ('batch_size_per_gpu', 'dataset_enlarge_ratio'):
        value = ds_opt.get(key)
        if _is_type(value, int) and value < 1:
            problems.append(f'{where}.{key}: must be at least 1, got {value}')
    backend = ds_opt.get('io_backend') or {}
    if not isinstance(backend, dict):
        problems.append(f'{where}.io_backend: expected a mapping such as {{type: disk}}, got {backend!r}')
        backend = {}
    db_paths = backend.get('db_paths')
    if db_paths is not None and not isinstance(db_paths, (str, list)):
        problems.append(f'{where}.io_backend.db_paths: expected a path or a list of paths, got {db_paths!r}')
    if not check_environment:
        return
    for key, value in ds_opt.items():
        if (key.startswith('dataroot') or key in ('meta_file', 'meta_info_file')) and isinstance(value, str):
            if not osp.exists(osp.expanduser(value)):
                problems.append(f'{where}.{key}: path not found: {value}')
    for db in [db_paths] if isinstance(db_paths, str) else (db_paths if isinstance(db_paths, list) else []):
        if isinstance(db, str) and not osp.isdir(osp.expanduser(db)):
            problems.append(f'{where}.io_backend.db_paths: LMDB folder not found: {db}')


def _check_losses(train_opt, problems, strict):
    from basicsr.utils.registry import LOSS_REGISTRY
    for key, loss_opt in train_opt.items():
        if not key.endswith('_opt') or loss_opt is None:
            continue
        where = f'train.{key}'
        if not isinstance(loss_opt, dict) or 'type' not in loss_opt:
            if strict or isinstance(loss_opt, dict):
                problems.append(f'{where}: expected a mapping with a "type" (a registered loss)')
            continue
        loss = registry_lookup(LOSS_REGISTRY, loss_opt['type'])
        if loss is None:
            problems.append(_unknown_type(LOSS_REGISTRY, loss_opt['type'], 'loss', where))
            continue
        _check_kwargs(loss, loss_opt, where, loss_opt['type'], problems)
        for name, value in loss_opt.items():
            message = _number_problem(value, f'{where}.{name}')
            if message:
                problems.append(message)


def _dummy_params():
    import torch
    return [torch.nn.Parameter(torch.zeros(1))]


def _check_optimizers(train_opt, model_cls, ours, problems):
    """Build each ``optim_*`` (and the scheduler) on a dummy parameter: exactly what the model will build."""
    from basicsr.models.base_model import BaseModel
    optimizers = {}
    for key, optim_opt in train_opt.items():
        if not (key.startswith('optim_') and isinstance(optim_opt, dict)):
            continue
        where = f'train.{key}'
        numbers = [m for m in (_number_problem(v, f'{where}.{k}') for k, v in optim_opt.items() if k != 'type') if m]
        problems.extend(numbers)
        if 'type' not in optim_opt:
            problems.append(f'{where}.type: required (Adam, AdamW, SGD...)')
            continue
        if numbers:
            continue
        options = {k: v for k, v in optim_opt.items() if k not in ('type', 'clip_lr')}
        try:
            if ours:
                from uiqa_plugin.optim import build_optimizer
                optimizers[key] = build_optimizer(_dummy_params(), dict(options, type=optim_opt['type']))
            elif model_cls is None or model_cls.get_optimizer is BaseModel.get_optimizer:
                # BasicSR's get_optimizer(optim_type, params, lr, **kwargs) does not use self
                optimizers[key] = BaseModel.get_optimizer(None, optim_opt['type'], _dummy_params(), **options)
        except NotImplementedError:
            problems.append(f'{where}.type: optimizer {optim_opt["type"]!r} is not supported by '
                            f'{getattr(model_cls, "__name__", "this model")} (BasicSR 1.4.2 builds only Adam)')
        except (TypeError, ValueError, KeyError) as exc:
            problems.append(f'{where}: {exc}')
    sched_opt = train_opt.get('scheduler')
    if not isinstance(sched_opt, dict):
        return
    where = 'train.scheduler'
    numbers = [m for m in (_number_problem(v, f'{where}.{k}') for k, v in sched_opt.items()) if m]
    problems.extend(numbers)
    if numbers or 'optim_g' not in optimizers:
        return
    options = {k: v for k, v in sched_opt.items() if k != 'type'}
    total_iter = train_opt.get('total_iter')
    if isinstance(total_iter, float) and total_iter.is_integer():
        total_iter = int(total_iter)
    if not (_is_type(total_iter, int) and total_iter > 0):
        return  # reported under train.total_iter; the scheduler depends on it
    try:
        if ours:
            from uiqa_plugin.optim import build_scheduler
            build_scheduler(optimizers['optim_g'], sched_opt, total_iter)
        elif model_cls is None or model_cls.setup_schedulers is BaseModel.setup_schedulers:
            from basicsr.models import lr_scheduler
            kind = sched_opt.get('type')
            if kind not in BASICSR_SCHEDULERS:
                problems.append(f'{where}.type: scheduler {kind!r} is not supported by '
                                f'{getattr(model_cls, "__name__", "this model")} (BasicSR 1.4.2 builds '
                                f'{", ".join(BASICSR_SCHEDULERS)})')
                return
            cls = lr_scheduler.CosineAnnealingRestartLR if kind == 'CosineAnnealingRestartLR' else \
                lr_scheduler.MultiStepRestartLR
            cls(optimizers['optim_g'], **options)
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        problems.append(f'{where}: {exc}')


def _check_train(opt, model_cls, ours, problems):
    train_opt = opt['train']
    strict = ours
    _check_block(train_opt, TRAIN_KEYS, 'train', problems, extra_ok=lambda k: k.endswith('_opt'), strict=strict)
    for key in ('total_iter', 'optim_g'):
        if key not in train_opt:
            problems.append(f'train.{key}: required')
    total = train_opt.get('total_iter')
    if isinstance(total, float) and total.is_integer():
        total = int(total)  # BasicSR recipes write !!float 4e5
    if _is_type(total, int) and total < 1:
        problems.append(f'train.total_iter: must be at least 1, got {total}')
    elif isinstance(total, str):
        problems.append(_number_problem(total, 'train.total_iter') or f'train.total_iter: expected int, got {total!r}')
    _check_losses(train_opt, problems, strict)
    _check_optimizers(train_opt, model_cls, ours, problems)


def _check_metrics(val_opt, model_cls, ours, problems, check_environment):
    from basicsr.utils.registry import METRIC_REGISTRY
    metrics = val_opt.get('metrics')
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        problems.append('val.metrics: expected a mapping {label: {type: calculate_...}}')
        return None
    model_name = getattr(model_cls, '__name__', 'this model')
    for label, metric_opt in metrics.items():
        where = f'val.metrics.{label}'
        if not isinstance(metric_opt, dict) or 'type' not in metric_opt:
            problems.append(f'{where}: expected a mapping with a "type" (a registered metric)')
            continue
        name = metric_opt['type']
        fn = registry_lookup(METRIC_REGISTRY, name)
        if fn is None and ours:
            from uiqa_plugin.metrics.iqa_metric import METRIC_FUNCTIONS
            fn = METRIC_FUNCTIONS.get(name)
        if fn is None:
            problems.append(_unknown_type(METRIC_REGISTRY, name, 'metric', where))
            continue
        dataset_level = getattr(fn, '__module__', '') == 'uiqa_plugin.metrics.iqa_metric'
        if ours and getattr(fn, 'per_image', False):
            problems.append(f'{where}.type: {name} scores single images for restoration models (SRModel...); '
                            f'{model_name} computes dataset-level metrics such as calculate_srcc')
            continue
        if not ours and dataset_level:
            problems.append(f'{where}.type: {name} is a dataset-level metric (predictions vs ratings of a whole set); '
                            f'{model_name} calls metrics once per image: use calculate_clipiqa or '
                            'calculate_uiqa_checkpoint for CLIP-IQA scores of its outputs')
            continue
        if getattr(fn, 'per_image', False):
            # ours take **kwargs only because BasicSR passes the whole dict: hold them to their named arguments
            accepted = set(inspect.signature(fn).parameters) - {'img', 'img2', 'kwargs'}
            accepted |= {'type', *getattr(fn, 'extra_option_keys', ())}
            for key in metric_opt:
                if key not in accepted:
                    close = _close(key, sorted(accepted))
                    problems.append(f'{where}.{key}: {name} has no option {key!r}' +
                                    (f' (did you mean {close[0]!r}?)' if close else ''))
            _check_image_metric(name, metric_opt, where, problems, check_environment)
    return metrics


def _check_image_metric(name, metric_opt, where, problems, check_environment):
    """What our per-image metrics would only find at the first validation."""
    if name == 'calculate_clipiqa':
        try:
            count = len(resolve_attributes(metric_opt.get('attributes', 'quality')))
        except (KeyError, ValueError) as exc:
            problems.append(f'{where}.attributes: {exc.args[0] if exc.args else exc}')
        else:
            if count != 1:
                problems.append(f'{where}.attributes: gives {count} scores; BasicSR averages one number per '
                                'metric: one val.metrics entry per attribute')
    if name == 'calculate_uiqa_checkpoint' and not metric_opt.get('checkpoint'):
        problems.append(f'{where}.checkpoint: required (a net_g_*.pth of IQAModel)')
    if check_environment:
        for key in ('checkpoint', 'clip_pretrained'):
            value = metric_opt.get(key)
            if isinstance(value, str) and (key == 'checkpoint' or looks_like_path(value)) \
                    and not osp.isfile(osp.expanduser(value)):
                problems.append(f'{where}.{key}: file not found: {value}')
        if metric_opt.get('device') is not None:
            try:
                check_device(metric_opt['device'], f'{where}.device')
            except OptionError as exc:
                problems.append(str(exc))


def _check_val(opt, model_cls, ours, problems, check_environment):
    val_opt = opt['val']
    if not _check_block(val_opt, VAL_KEYS if ours else BASICSR_VAL_KEYS, 'val', problems, strict=ours):
        return
    freq = val_opt.get('val_freq')
    if _is_type(freq, (int, float)) and not freq > 0:
        problems.append(f'val.val_freq: must be positive (validate every N iterations), got {freq}; '
                        'to skip validation, remove the val block or the val dataset')
    metrics = _check_metrics(val_opt, model_cls, ours, problems, check_environment)
    key_metric = val_opt.get('key_metric')
    if isinstance(key_metric, str):
        if ours and metrics is None:
            from uiqa_plugin.metrics.iqa_metric import DEFAULT_METRICS
            metrics = DEFAULT_METRICS
        if metrics is not None and key_metric not in metrics:
            problems.append(f'val.key_metric: {key_metric!r} is not among the metrics {list(metrics)}')


def _check_logger(opt, ours, problems):
    logger = opt['logger']
    if not _check_block(logger, LOGGER_KEYS, 'logger', problems, strict=ours):
        return
    for key in ('print_freq', 'save_checkpoint_freq'):
        value = logger.get(key)
        if _is_type(value, (int, float)) and not value > 0:
            problems.append(f'logger.{key}: must be positive, got {value}')


#: longest experiment name in bytes: BasicSR adds up to 32 characters to it in file names
#: (``_archived_<time>``, ``train_<name>_<time>.log``, ``debug_``), and folders hold names of 255 bytes
MAX_NAME_BYTES = 200


def _check_name(name, problems):
    """``name`` names experiments/<name> and results/<name>: one folder name, nothing else."""
    if not isinstance(name, str):
        return
    if not name.strip() or name in ('.', '..'):
        problems.append(f'name: {name!r} is not a folder name')
    elif '/' in name or '\\' in name or '\0' in name or '..' in name:
        problems.append(f'name: {name!r} must be a plain folder name (no /, \\ or ..): it names '
                        'experiments/<name> and results/<name>')
    elif len(name.encode('utf-8')) > MAX_NAME_BYTES:
        problems.append(f'name: {len(name.encode("utf-8"))} bytes long, at most {MAX_NAME_BYTES} '
                        '(it becomes part of folder and file names)')


def _check_num_gpu(opt, problems):
    num_gpu = opt.get('num_gpu')
    if num_gpu is None or num_gpu == 'auto':
        return
    if not _is_type(num_gpu, int) or num_gpu < 0:
        problems.append(f"num_gpu: expected 'auto' or a count >= 0, got {num_gpu!r}")
        return
    if num_gpu > 0:
        import torch
        available = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if num_gpu > available:
            problems.append(f'num_gpu: {num_gpu} asked for, but this machine has {available} CUDA GPU(s); '
                            f"use num_gpu: auto (all there are, or the CPU) or {available}")


def _import_user_modules(opt, problems, run_imports=True):
    """Import the modules of ``imports:`` (they register users' classes); with ``run_imports=False`` only
    those already imported (named with ``--import``): a file that is only being checked runs no code."""
    if 'imports' not in opt:
        return
    imports = opt['imports']
    if not (isinstance(imports, str) or (isinstance(imports, list) and all(isinstance(i, str) for i in imports))):
        problems.append(f'imports: expected a module name or a list of them, got {imports!r}')
        return
    if not run_imports:
        skipped = [name for name in split_names(imports) if name not in IMPORTED
                   and osp.abspath(osp.expanduser(name)) not in IMPORTED]
        if skipped:
            problems.append(f'imports: {", ".join(skipped)} not imported: checking a file runs none of its code; '
                            f'pass {" ".join("--import " + n for n in skipped)} to allow it')
        return
    try:
        import_user_modules(imports)
    except UserModuleError as exc:
        problems.append(f'imports: {exc}')


# ----------------------------------------------------------------------------- entry points

def validate_options(opt, is_train=True, source='options', check_environment=True, run_imports=True):
    """Check a loaded option dict; raises OptionError listing every problem.

    Imports the modules of ``imports`` first (users' registered classes), then checks; with
    ``run_imports=False`` it imports none (a module not imported yet is a problem to report).
    ``check_environment=False`` skips file-existence and GPU checks (a recipe for another machine).
    """
    from basicsr.utils.registry import MODEL_REGISTRY
    problems = []
    if not isinstance(opt, dict):
        raise OptionError(f'{source}: the file must hold a mapping of options')
    _import_user_modules(opt, problems, run_imports)
    from_checkpoint = not is_train and isinstance(opt.get('path'), dict) and opt['path'].get('pretrain_network_g')
    for key in ('name', 'model_type', 'datasets', 'network_g'):
        if key not in opt and not (key == 'network_g' and from_checkpoint):  # test.py reads it from the checkpoint
            problems.append(f'{key}: required')
    model_cls = registry_lookup(MODEL_REGISTRY, opt.get('model_type'))
    if model_cls is None and 'model_type' in opt:
        problems.append(_unknown_type(MODEL_REGISTRY, opt['model_type'], 'model', 'model_type').replace(
            'model_type.type', 'model_type'))
    ours = model_cls is None or is_ours(model_cls)  # unknown model: hold it to our schema
    _check_block(opt, TOP_LEVEL if ours else BASICSR_TOP_LEVEL, '', problems, strict=ours)
    _check_name(opt.get('name'), problems)
    arch = None
    if isinstance(opt.get('network_g'), dict):
        arch = _check_network(opt['network_g'], 'network_g', problems, check_environment)
    if not ours and isinstance(opt.get('network_d'), dict):
        _check_network(opt['network_d'], 'network_d', problems, check_environment)
    if isinstance(opt.get('datasets'), dict):
        if not opt['datasets']:
            problems.append('datasets: empty')
        for phase, ds_opt in opt['datasets'].items():
            if is_train and phase.split('_')[0] not in ('train', 'val'):
                problems.append(f'datasets.{phase}: training phases are train and val[_N]')
            _check_dataset(phase, ds_opt, problems, check_environment)
        if is_train and 'train' not in opt['datasets']:
            problems.append('datasets.train: required for training')
        if isinstance(opt.get('network_g'), dict):
            _check_normalization(opt['network_g'], arch, opt['datasets'], problems)
    if is_train:
        if 'train' not in opt:
            problems.append('train: required for training')
        elif isinstance(opt['train'], dict):
            _check_train(opt, model_cls, ours, problems)
        else:
            problems.append(f'train: expected a mapping, got {type(opt["train"]).__name__}')
        if 'logger' not in opt:
            problems.append('logger: required for training (print_freq, save_checkpoint_freq)')
    if opt.get('val') is not None:
        _check_val(opt, model_cls, ours, problems, check_environment)
    if opt.get('logger') is not None:
        _check_logger(opt, ours, problems)
    if opt.get('path') is not None and _check_block(opt['path'], PATH_KEYS, 'path', problems, strict=ours,
                                                    extra_ok=lambda k: k.startswith(('pretrain_network_',
                                                                                     'strict_load_', 'param_key_'))):
        for key, value in opt['path'].items():
            if check_environment and key.startswith('pretrain_network_') and isinstance(value, str) \
                    and not osp.isfile(osp.expanduser(value)):
                problems.append(f'path.{key}: file not found: {value}')
    if check_environment:
        _check_num_gpu(opt, problems)
    if problems:
        raise OptionError(f'{source} has {len(problems)} problem(s):\n  - ' + '\n  - '.join(problems))
    return opt


def load_options(path, is_train=True, check_environment=True, run_imports=True):
    """Read and validate an option YAML (``run_imports``: as for ``validate_options``)."""
    if not osp.isfile(path):
        raise OptionError(f'{path}: option file not found')
    with open(path, encoding='utf-8') as f:
        try:
            opt = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise OptionError(f'{path}: not valid YAML ({exc})') from exc
    return validate_options(opt, is_train=is_train, source=path, check_environment=check_environment,
                            run_imports=run_imports)


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


def check_train_batches(dataset, dataset_opt, world_size=1):
    """After the training set is built: a batch must fit, else the loader (drop_last) yields no iteration.

    Raises OptionError naming ``batch_size_per_gpu`` and how many samples one batch needs.
    """
    batch = dataset_opt.get('batch_size_per_gpu', 1)
    ratio = dataset_opt.get('dataset_enlarge_ratio', 1) or 1
    per_rank = math.ceil(len(dataset) * ratio / max(world_size, 1))
    if per_rank < batch:
        name = dataset_opt.get('name', 'train')
        spread = f' over {world_size} processes' if world_size > 1 else ''
        raise OptionError(f'datasets.train.batch_size_per_gpu: {batch}, but training set {name!r} has '
                          f'{len(dataset)} samples (x{ratio} dataset_enlarge_ratio{spread}: {per_rank} per process); '
                          f'batches drop incomplete ones, so a batch needs {batch} samples and training would run '
                          f'0 iterations: use batch_size_per_gpu <= {per_rank} or more data')


CLI_DESCRIPTION = """Validate option files, one line each, before any work starts.

The modules a file lists under imports: are NOT imported (importing runs their code): name each
with --import to allow it; without, the file is reported invalid and says which to pass."""


def main(argv=None):
    """``python -m uiqa_plugin.options [--portable] [--import MODULE] FILE...``: validate option files."""
    import argparse
    parser = argparse.ArgumentParser(prog='python -m uiqa_plugin.options', description=CLI_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('files', nargs='+')
    parser.add_argument('--portable', action='store_true',
                        help='skip checks of this machine (data and weight files, GPUs)')
    parser.add_argument('--import', dest='imports', action='append', default=[], metavar='MODULE',
                        help="import this module first (a dotted name or a .py file): it runs the module's code; "
                             "the files' own imports: lists are imported only when named here")
    args = parser.parse_args(argv)
    try:
        import_user_modules(args.imports)
    except UserModuleError as exc:
        print(f'invalid --import: {exc}')
        return 1
    failed = 0
    for path in args.files:
        try:
            with open(path, encoding='utf-8') as f:
                raw = yaml.safe_load(f)
            is_train = isinstance(raw, dict) and isinstance(raw.get('train'), dict)
            load_options(path, is_train=is_train, check_environment=not args.portable, run_imports=False)
            print(f'ok      {path}')
        except (OptionError, OSError, yaml.YAMLError) as exc:
            failed += 1
            print(f'invalid {exc}')
    print(f'{len(args.files) - failed} of {len(args.files)} valid')
    return 1 if failed else 0


if __name__ == '__main__':
    import sys
    sys.exit(main())
