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

from uiqa_plugin.data.image_io import ImageReadError, image_to_tensor, is_image_file, read_image


def default_device():
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def create_metric(attributes='quality', clip_model='RN50', clip_pretrained='openai', device=None, **kwargs):
    """A ready-to-call zero-shot CLIP-IQA model in eval mode on ``device``.

    attributes: names, presets or ``"positive|negative"`` pairs (see ``uiqa_plugin.prompts``).
    The returned module maps RGB images (N, 3, H, W) in [0, 1] to (N, P) scores in [0, 1];
    ``metric.attribute_names`` names the columns. Other keyword arguments go to ``CLIPIQA``.
    """
    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
    metric = CLIPIQA(attributes=attributes, clip_model=clip_model, clip_pretrained=clip_pretrained, **kwargs)
    return metric.to(device or default_device()).eval()


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
    """Group (index, tensor) items of equal spatial size into batches of at most ``batch_size``."""
    groups = {}
    for index, tensor in items:
        groups.setdefault(tuple(tensor.shape), []).append((index, tensor))
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


@torch.no_grad()
def score_paths(metric, inputs, batch_size=1, strict=False, progress=True, read_ahead=8):
    """Score image files with ``metric`` (e.g. from ``create_metric``).

    inputs: files, folders (recursive) and glob patterns. Images of different sizes are
    batched with others of the same size. Unreadable files are recorded in ``failures``
    and skipped, or raise ``ImageReadError`` when ``strict``.
    """
    from tqdm import tqdm
    paths, problems = collect_image_paths(inputs)
    if strict and problems:
        raise FileNotFoundError('; '.join(f'{p}: {m}' for p, m in problems))
    result = ScoreResult(list(metric.attribute_names), failures=list(problems))
    device = next(iter(metric.buffers()), torch.empty(0)).device
    scores = [None] * len(paths)
    chunk = max(batch_size * read_ahead, 1)
    bar = tqdm(total=len(paths), desc='scoring', unit='img', disable=not progress)
    for start in range(0, len(paths), chunk):
        loaded = []
        for index in range(start, min(start + chunk, len(paths))):
            try:
                loaded.append((index, image_to_tensor(read_image(paths[index]))))
            except ImageReadError as exc:
                if strict:
                    raise
                result.failures.append((paths[index], str(exc)))
                bar.update(1)
        for batch in _batches_by_size(loaded, batch_size):
            images = torch.stack([t for _, t in batch]).to(device)
            out = metric(images).float().cpu()
            for (index, _), row in zip(batch, out):
                scores[index] = row.tolist()
            bar.update(len(batch))
    bar.close()
    for path, row in zip(paths, scores):
        if row is not None:
            result.rows.append({'path': path, **dict(zip(result.attribute_names, row))})
    return result
