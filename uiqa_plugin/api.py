"""The Python entry points: build a scoring model, score image files.

    >>> import uiqa_plugin
    >>> metric = uiqa_plugin.create_metric('quality,look,feel')          # RN50 + OpenAI weights
    >>> result = uiqa_plugin.score_paths(metric, ['photos/'], batch_size=4)
    >>> result.rows[0]   # {'path': 'photos/a.jpg', 'quality': 0.71, 'brightness': 0.55, ...}
"""
import glob
import os
import os.path as osp
from dataclasses import dataclass, field

from uiqa_plugin.data.image_io import ImageReadError
from uiqa_plugin.devices import default_device
from uiqa_plugin.scoring.input_limits import MAX_ASPECT


def create_metric(attributes='quality', clip_model='RN50', clip_pretrained='openai', device=None, precision='fp32',
                  **kwargs):
    """A ready-to-call zero-shot CLIP-IQA model in eval mode on ``device``.

    attributes: names, presets or ``"positive|negative"`` pairs (see ``uiqa_plugin.prompts``).
    The returned module maps RGB images (N, 3, H, W) in [0, 1] to (N, P) scores in [0, 1];
    ``metric.attribute_names`` names the columns. precision: 'fp32' (default, the reference numbers),
    'bf16' (fast on GPUs and on CPUs with bf16 units) or 'fp16' (CUDA only); see ``uiqa_plugin.clip_precision``.
    Other keyword arguments go to ``CLIPIQA``.
    """
    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
    from uiqa_plugin.clip_precision import check_precision
    check_precision(precision, device or default_device())  # fp16 on a CPU fails here, before CLIP loads
    metric = CLIPIQA(attributes=attributes, clip_model=clip_model, clip_pretrained=clip_pretrained,
                     precision=precision, **kwargs)
    return metric.to(device or default_device()).eval()


def load_trained_model(checkpoint, device=None, clip_model=None, clip_pretrained=None, quick_gelu=None,
                       trust=False, precision=None):
    """A trained model (CLIP-IQA+, CLIP-UIQA) from one of our checkpoints, in eval mode.

    The checkpoint carries the arch options (``network_g``, with absolute CLIP paths) and the
    preprocessing it was validated with (``view_pipeline`` rebuilds it). CLIP itself is loaded
    as usual, from ``clip_model`` / ``clip_pretrained`` when given (e.g. a local weight file),
    else from the names stored in the checkpoint. The weights are the averaged ones
    (``params_ema``) when the run kept an average, as its validation used them.

    trust: allow a file that needs full unpickling (it may run code); never the default.
    quick_gelu, precision: override what the checkpoint recorded (None: keep it).
    Raises ``checkpoint_io.CheckpointReadError`` (a ValueError) for unreadable or refused files.
    """
    from basicsr.utils.registry import ARCH_REGISTRY
    from uiqa_plugin.checkpoint_io import load_checkpoint
    from uiqa_plugin.models.iqa_model import missing_clip_paths
    ckpt = load_checkpoint(checkpoint, trust=trust)
    if not isinstance(ckpt, dict) or 'params' not in ckpt or 'network_g' not in ckpt:
        raise ValueError(f'{checkpoint}: not a uiqa-plugin checkpoint (needs "params" and "network_g"; '
                         'convert published CLIP-IQA+ weights with uiqa-convert)')
    options = dict(ckpt['network_g'])
    arch = options.pop('type')
    if arch not in ARCH_REGISTRY:  # a user's arch: its module must be imported first (never from the file)
        from uiqa_plugin.user_modules import unknown_arch_message
        raise ValueError(unknown_arch_message(checkpoint, arch, ckpt.get('imports')))
    if clip_model is not None:
        options['clip_model'] = clip_model
    if clip_pretrained is not None:
        options['clip_pretrained'] = clip_pretrained
    missing = missing_clip_paths(options)
    if missing:
        flags = {'clip_model': '--clip-model', 'clip_pretrained': '--clip-pretrained'}
        raise ValueError(f'{checkpoint}: it was trained with CLIP files that are not here: ' +
                         ', '.join(f'{k} {v}' for k, v in missing) + '; point at them with ' +
                         ' / '.join(flags[k] for k, _ in missing) + ' (uiqa-score) or ' +
                         ' / '.join(f'{k}=' for k, _ in missing) + ' (load_trained_model)')
    if quick_gelu is not None:  # else the activation the checkpoint recorded (or the weights' rule)
        options['quick_gelu'] = quick_gelu
    if precision is not None:  # else the precision it was trained with
        options['precision'] = precision
    model = ARCH_REGISTRY.get(arch)(**options)
    params = ckpt['params_ema'] if isinstance(ckpt.get('params_ema'), dict) else ckpt['params']
    try:
        model.load_state_dict(params, strict=True)
    except RuntimeError as exc:
        raise ValueError(f'{checkpoint}: weights do not fit {arch} built from its own options: {exc}') from exc
    model.preprocessing = ckpt.get('preprocessing')
    model.view_options = ckpt.get('view_options')
    if getattr(model, 'regressor', None) is not None:
        model.output_names = ['score']
    return model.to(device or default_device()).eval()


def output_names(model):
    """Column names of a model's output: its attributes, or 'score' for a regression head."""
    return list(getattr(model, 'output_names', None) or model.attribute_names)


def evaluation_transform_specs(model):
    """The evaluation transform chain (a list of transform dicts) that turns an image file into ``model``'s views.

    For a trained model, the preprocessing stored in its checkpoint (the validation dataset's
    ``resize``, ``views``, ``mean``/``std`` or explicit ``transforms``), read from disk; else the
    model's views with CLIP's normalization when it expects normalized input. The chain starts
    with ``LoadImage`` and ends with ``Normalize`` (possibly a no-op) and ``Collect``.
    """
    from uiqa_plugin.clip_backbone import CLIP_MEAN, CLIP_STD
    from uiqa_plugin.data.transforms import view_transform_specs
    inner = getattr(model, 'metric', model)  # uiqa-profile's scorer wraps a metric
    pre = getattr(model, 'preprocessing', None) or getattr(inner, 'preprocessing', None)
    names = list(getattr(model, 'views', None) or getattr(inner, 'views', None) or ['image'])
    if pre and pre.get('transforms'):
        specs = [dict(s) for s in pre['transforms']]
        if specs[0].get('type') != 'LoadImage':
            specs.insert(0, {'type': 'LoadImage'})
        if specs[-1].get('type') != 'Collect':
            specs.append({'type': 'Collect'})
        for spec in specs:
            if spec.get('type') == 'LoadImage':
                spec['io_backend'] = None  # files on disk, whatever the training read from
        return specs
    if pre:
        return view_transform_specs(pre.get('views') or names, train=False, resize=pre.get('resize'),
                                    mean=pre.get('mean'), std=pre.get('std'))
    views = getattr(model, 'view_options', None) or getattr(inner, 'view_options', None) or names
    normalized = getattr(model, 'input_normalized', getattr(inner, 'input_normalized', False))
    return view_transform_specs(views, train=False, mean=CLIP_MEAN if normalized else None,
                                std=CLIP_STD if normalized else None)


def view_pipeline(model):
    """The evaluation transform (a callable on samples) that turns an image file into the views ``model`` takes."""
    from uiqa_plugin.data.transforms import build_transforms
    return build_transforms(evaluation_transform_specs(model), train=False)


def collect_image_paths(inputs, recursive=True):
    """Expand files, folders and glob patterns into a sorted-per-input list of image paths.

    Folders are walked following symbolic links, cycle-safe: each real file is listed once,
    under the first path that reaches it (see ``uiqa_plugin.scoring.paths``).
    Returns (paths, problems): ``problems`` lists (input, message) for inputs that matched
    nothing, folders that cannot be listed and links whose target is missing.
    """
    from uiqa_plugin.scoring.paths import glob_files, walk_files
    paths, problems = [], []
    for item in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs):
        item = os.fspath(item)
        if osp.isdir(item):
            found, trouble = walk_files(item, recursive=recursive)
            problems.extend(trouble)
            if not found and not trouble:
                problems.append((item, 'folder holds no image files'))
            paths.extend(found)
        elif osp.isfile(item):
            paths.append(item)  # named explicitly: try it whatever its suffix
        elif glob.has_magic(item):
            found, trouble = glob_files(item)
            problems.extend(trouble)
            if not found:
                problems.append((item, 'pattern matched no files'))
            paths.extend(found)
        elif osp.islink(item):
            problems.append((item, 'broken symbolic link (its target is missing or loops)'))
        else:
            problems.append((item, 'no such file or folder'))
    seen, unique = set(), []
    for path in paths:  # one row per real file, whichever input reached it first
        real = osp.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique, problems


@dataclass
class ScoreResult:
    """``rows``: one dict per scored image in input order ('path' + one float per attribute);
    ``failures``: (path, message) for images that could not be scored."""
    attribute_names: list
    rows: list = field(default_factory=list)
    failures: list = field(default_factory=list)


def score_paths(metric, inputs, batch_size=1, strict=False, progress=True, workers=None, read_ahead=8,
                max_aspect=MAX_ASPECT):
    """Score image files with ``metric`` (``create_metric`` or ``load_trained_model``).

    inputs: files, folders (recursive) and glob patterns. Each file becomes the views the
    model takes (the original image, and for CLIP-UIQA the fragment mosaic and centre
    patch), decoded in ``workers`` processes (default: up to 4; 0: in this process).
    Images of different sizes are batched with others of the same size; rows keep input order.
    Images smaller than the CLIP image tower takes are upscaled to its minimum (aspect kept);
    images more than ``max_aspect`` times longer than wide are refused.
    Unreadable or refused files are recorded in ``failures`` and skipped, or raise
    ``ImageReadError`` when ``strict``.
    """
    from tqdm import tqdm

    from uiqa_plugin.scoring import default_workers
    from uiqa_plugin.scoring.loader import iter_scores
    paths, problems = collect_image_paths(inputs)
    if strict and problems:
        raise FileNotFoundError('; '.join(f'{p}: {m}' for p, m in problems))
    names = output_names(metric)
    result = ScoreResult(names, failures=list(problems))
    workers = default_workers() if workers is None else workers
    with tqdm(total=len(paths), desc='scoring', unit='img', disable=not progress) as bar:
        for index, scores, error in iter_scores(metric, paths, batch_size=batch_size,
                                                workers=min(workers, len(paths) // 2), read_ahead=read_ahead,
                                                max_aspect=max_aspect, progress=bar):
            if error is not None:
                if strict:
                    raise ImageReadError(error)
                result.failures.append((paths[index], error))
            else:
                result.rows.append({'path': paths[index], **dict(zip(names, scores))})
    return result
