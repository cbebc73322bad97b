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

import torch

from uiqa_plugin.data.image_io import ImageReadError, is_image_file


def default_device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


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


def load_trained_model(checkpoint, device=None, clip_model=None, clip_pretrained=None):
    """A trained model (CLIP-IQA+, CLIP-UIQA) from one of our checkpoints, in eval mode.

    The checkpoint carries the arch options (``network_g``) and the view options it was trained
    with; CLIP itself is loaded as usual, from ``clip_model`` / ``clip_pretrained`` when given
    (e.g. a local weight file), else from the names stored in the checkpoint.
    """
    from basicsr.utils.registry import ARCH_REGISTRY
    try:
        ckpt = torch.load(checkpoint, map_location='cpu', weights_only=False)
    except Exception as exc:  # missing, truncated or foreign file
        raise ValueError(f'{checkpoint}: cannot be read as a checkpoint ({type(exc).__name__}: {exc})') from exc
    if not isinstance(ckpt, dict) or 'params' not in ckpt or 'network_g' not in ckpt:
        raise ValueError(f'{checkpoint}: not a uiqa-plugin checkpoint (needs "params" and "network_g"; '
                         'convert published CLIP-IQA+ weights with uiqa-convert)')
    options = dict(ckpt['network_g'])
    arch = options.pop('type')
    if clip_model is not None:
        options['clip_model'] = clip_model
    if clip_pretrained is not None:
        options['clip_pretrained'] = clip_pretrained
    model = ARCH_REGISTRY.get(arch)(**options)
    try:
        model.load_state_dict(ckpt['params'], strict=True)
    except RuntimeError as exc:
        raise ValueError(f'{checkpoint}: weights do not fit {arch} built from its own options: {exc}') from exc
    model.view_options = ckpt.get('view_options')
    if getattr(model, 'regressor', None) is not None:
        model.output_names = ['score']
    return model.to(device or default_device()).eval()


def output_names(model):
    """Column names of a model's output: its attributes, or 'score' for a regression head."""
    return list(getattr(model, 'output_names', None) or model.attribute_names)


def view_pipeline(model):
    """The evaluation transform chain that turns an image file into the views ``model`` takes."""
    from uiqa_plugin.clip_backbone import CLIP_MEAN, CLIP_STD
    from uiqa_plugin.data.transforms import build_transforms, view_transform_specs
    views = getattr(model, 'view_options', None) or {v: {} for v in getattr(model, 'views', ['image'])}
    normalized = getattr(model, 'input_normalized', False)
    specs = view_transform_specs(views, train=False, mean=CLIP_MEAN if normalized else None,
                                 std=CLIP_STD if normalized else None)
    return build_transforms(specs, train=False)


def collect_image_paths(inputs, recursive=True):
    """Expand files, folders and glob patterns into a sorted-per-input list of image paths.

    Returns (paths, problems): ``problems`` lists (input, message) for inputs that matched nothing.
    """
    paths, problems = [], []
    for item in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs):
        item = os.fspath(item)
        if osp.isdir(item):
            pattern = osp.join(item, '**', '*') if recursive else osp.join(item, '*')
            found = sorted(p for p in glob.glob(pattern, recursive=recursive) if osp.isfile(p) and is_image_file(p))
            if not found:
                problems.append((item, 'folder holds no image files'))
            paths.extend(found)
        elif osp.isfile(item):
            paths.append(item)  # named explicitly: try it whatever its suffix
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if osp.isfile(p))
            if not found:
                problems.append((item, 'pattern matched no files'))
            paths.extend(found)
        else:
            problems.append((item, 'no such file or folder'))
    seen = set()
    unique = [p for p in paths if not (p in seen or seen.add(p))]
    return unique, problems


@dataclass
class ScoreResult:
    """``rows``: one dict per scored image in input order ('path' + one float per attribute);
    ``failures``: (path, message) for images that could not be scored."""
    attribute_names: list
    rows: list = field(default_factory=list)
    failures: list = field(default_factory=list)


def _batches_by_size(items, batch_size):
    """Group (index, sample) items whose views have equal sizes into batches of at most ``batch_size``."""
    groups = {}
    for index, sample in items:
        shapes = tuple(tuple(v.shape) for v in sample.values())
        groups.setdefault(shapes, []).append((index, sample))
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


@torch.no_grad()
def score_paths(metric, inputs, batch_size=1, strict=False, progress=True, read_ahead=8):
    """Score image files with ``metric`` (``create_metric`` or ``load_trained_model``).

    inputs: files, folders (recursive) and glob patterns. Each file becomes the views the
    model takes (the original image, and for CLIP-UIQA the fragment mosaic and centre
    patch). Images of different sizes are batched with others of the same size.
    Unreadable files are recorded in ``failures`` and skipped, or raise ``ImageReadError``
    when ``strict``.
    """
    from tqdm import tqdm
    paths, problems = collect_image_paths(inputs)
    if strict and problems:
        raise FileNotFoundError('; '.join(f'{p}: {m}' for p, m in problems))
    names = output_names(metric)
    result = ScoreResult(names, failures=list(problems))
    pipeline = view_pipeline(metric)
    views = [v for v in getattr(metric, 'views', ['image'])]
    device = next(iter(metric.buffers()), torch.empty(0)).device
    scores = [None] * len(paths)
    chunk = max(batch_size * read_ahead, 1)
    bar = tqdm(total=len(paths), desc='scoring', unit='img', disable=not progress)
    for start in range(0, len(paths), chunk):
        loaded = []
        for index in range(start, min(start + chunk, len(paths))):
            try:
                sample = pipeline({'key': paths[index], 'path': paths[index], 'target': [], 'views': {}})
            except ImageReadError as exc:
                if strict:
                    raise
                result.failures.append((paths[index], str(exc)))
                bar.update(1)
                continue
            loaded.append((index, {v: sample[v] for v in views}))
        for batch in _batches_by_size(loaded, batch_size):
            inputs_ = {v: torch.stack([sample[v] for _, sample in batch]).to(device) for v in views}
            out = metric(inputs_ if len(views) > 1 else inputs_[views[0]]).float().cpu()
            for (index, _), row in zip(batch, out):
                scores[index] = row.tolist()
            bar.update(len(batch))
    bar.close()
    for path, row in zip(paths, scores):
        if row is not None:
            result.rows.append({'path': path, **dict(zip(names, row))})
    return result
