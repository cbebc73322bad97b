"""Attribute profiles: every attribute score of every image, plus optional extra scorers.

A profile is a tidy table, one row per image (``path`` + one float column per attribute).
Extra scorers are the hook for other models, e.g. a trained quality model: any callable
mapping RGB images (N, 3, H, W) in [0, 1] to (N,) or (N, 1) scores adds one column; one
giving (N, K) adds K columns named ``<name>/<attribute>``, from its ``attribute_names`` (required).

    >>> metric = uiqa_plugin.create_metric('feel')
    >>> result = profile_images(metric, ['photos/'], extra_scorers={'quality_model': trained_net})
"""
import importlib
import os.path as osp

import torch
import torch.nn as nn

from uiqa_plugin.api import score_paths
from uiqa_plugin.data.image_io import ImageReadError, read_image
from uiqa_plugin.perception.radar import radar_chart, save_chart, thumbnail
from uiqa_plugin.perception.score_tables import chart_stems


class ProfileScorer(nn.Module):
    """A CLIP-IQA metric and extra scorers behind one forward: (N, 3, H, W) -> (N, P + extra columns).

    metric: a module with ``attribute_names`` (e.g. ``CLIPIQA``); extra_scorers: {column name: callable}.
    Extra scorers that are modules are moved with this one; plain callables receive images on its device.
    """

    def __init__(self, metric, extra_scorers=None):
        super().__init__()
        self.metric = metric
        self.extra = nn.ModuleDict()
        self._callables = {}
        for name, scorer in (extra_scorers or {}).items():
            if name in metric.attribute_names:
                raise ValueError(f'extra scorer {name!r} clashes with an attribute of the same name')
            if not callable(scorer):
                raise TypeError(f'extra scorer {name!r} is not callable: {type(scorer).__name__}')
            if isinstance(scorer, nn.Module) and '.' not in name:
                self.extra[name] = scorer
            else:
                self._callables[name] = scorer
        self._order = list((extra_scorers or {}).keys())

    @property
    def attribute_names(self):
        names = list(self.metric.attribute_names)
        for name in self._order:
            names.extend(self._columns_of(name))
        return names

    def _scorer(self, name):
        return self.extra[name] if name in self.extra else self._callables[name]

    def _columns_of(self, name):
        inner = getattr(self._scorer(name), 'attribute_names', None)
        if inner is not None and len(inner) > 1:
            return [f'{name}/{a}' for a in inner]
        return [name]

    def forward(self, images):
        columns = [self.metric(images)]
        for name in self._order:
            out = torch.as_tensor(self._scorer(name)(images)).to(columns[0].device, columns[0].dtype)
            if out.dim() == 1:
                out = out[:, None]
            if out.dim() != 2 or out.shape[0] != images.shape[0]:
                raise ValueError(f'extra scorer {name!r} returned shape {tuple(out.shape)} for {images.shape[0]} '
                                 'images; expected (N,) or (N, K)')
            expected = self._columns_of(name)
            if out.shape[1] != len(expected):
                raise ValueError(f'extra scorer {name!r} returned {out.shape[1]} columns but declares '
                                 f'{len(expected)} ({", ".join(expected)}); a scorer with several columns '
                                 'must name them in its attribute_names')
            columns.append(out)
        return torch.cat(columns, dim=1)


def profile_images(metric, inputs, extra_scorers=None, batch_size=1, strict=False, progress=True):
    """Score image files on every attribute of ``metric`` and every extra scorer.

    inputs: one file, or files / folders / glob patterns. Returns ``uiqa_plugin.api.ScoreResult``:
    ``rows`` = [{'path': ..., attribute: float, ...}] in input order, ``failures`` = [(path, message)].
    """
    scorer = ProfileScorer(metric, extra_scorers) if extra_scorers else metric
    if extra_scorers:
        scorer.eval()
    inputs = [inputs] if isinstance(inputs, str) else inputs
    return score_paths(scorer, inputs, batch_size=batch_size, strict=strict, progress=progress)


def load_scorer(spec, device=None):
    """``'NAME=package.module:factory'`` -> (NAME, scorer): imports ``factory`` and calls ``factory(device=device)``.

    The factory returns a callable (N, 3, H, W) RGB [0, 1] -> (N,) or (N, K) scores (e.g. a trained model).
    """
    name, sep, target = spec.partition('=')
    module_name, colon, attr = target.partition(':')
    if not sep or not colon or not name.strip() or not module_name or not attr:
        raise ValueError(f'scorer {spec!r} must be NAME=package.module:factory')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f'scorer {name!r}: cannot import module {module_name!r} ({exc})') from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ValueError(f'scorer {name!r}: module {module_name!r} has no {attr!r}')
    scorer = factory(device=device)
    if isinstance(scorer, nn.Module):
        scorer = scorer.eval()
    return name.strip(), scorer


#: key that scripts/make_tiny_clip.py sets in its weight file: the weights are random
RANDOM_WEIGHTS_KEY = 'random_weights'


def model_random_weights_reason(model):
    """``random_weights_reason`` for the CLIP a built model (CLIPIQA, CLIPUIQA, a profile scorer) runs on."""
    clip = getattr(getattr(model, 'metric', model), 'clip', None)
    source = getattr(clip, 'source', None)
    if source == 'random':
        return random_weights_reason(None)
    return random_weights_reason(source) if source else None


def random_weights_reason(clip_pretrained):
    """Why scores from these CLIP weights mean nothing (random weights), or None for trained weights.

    clip_pretrained: None/'none' (random initialisation), an open_clip tag, or a weight file; a file
    written by ``scripts/make_tiny_clip.py`` carries ``random_weights: True``. Only that flag is read
    (memory-mapped, weights_only), so large weight files cost nothing.
    """
    if clip_pretrained is None or str(clip_pretrained).lower() in ('', 'none', 'random'):
        return 'CLIP has random weights (--clip-pretrained none): these scores are meaningless.'
    path = str(clip_pretrained)
    if not osp.isfile(path):
        return None
    from uiqa_plugin.clip.pretrained import is_torchscript  # lazy: importing open_clip takes seconds
    try:
        if is_torchscript(path):  # OpenAI's releases: trained weights
            return None
        checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # not ours to judge here: loading the weights reports unreadable files
        return None
    if isinstance(checkpoint, dict) and checkpoint.get(RANDOM_WEIGHTS_KEY) is True:
        return (f'CLIP weights {osp.basename(path)} are random (made by scripts/make_tiny_clip.py for demos and '
                'tests): these scores are meaningless.')
    return None


def write_radar_charts(rows, attribute_names, out_dir, formats=('png', 'svg'), with_image=True, progress=True,
                       caption=None, on_problem=None):
    """One radar chart per row (image) into ``out_dir``; returns the written paths.

    caption: a line under each chart (``RANDOM_WEIGHTS_CAPTION`` for random weights); on_problem(message):
    told when an image cannot be read for its thumbnail (the chart is drawn without it).
    """
    from tqdm import tqdm
    written = []
    stems = chart_stems([row['path'] for row in rows], out_dir)
    for row, stem in tqdm(list(zip(rows, stems)), desc='radar', unit='chart', disable=not progress):
        images = []
        if with_image:
            try:
                images = [thumbnail(read_image(row['path']), 384)]
            except ImageReadError as exc:
                if on_problem:
                    on_problem(f'no thumbnail for {exc}')
        name = osp.basename(row['path'])
        chart = radar_chart([(name, [row[n] for n in attribute_names])], attribute_names, images=images, title=name,
                            caption=caption)
        written += save_chart(chart.figure, stem, formats)
    return written
