"""Attribute profiles: every attribute score of every image, plus optional extra scorers.

A profile is a tidy table, one row per image (``path`` + one float column per attribute).
Extra scorers are the hook for other models, e.g. a trained quality model: any callable
mapping RGB images (N, 3, H, W) in [0, 1] to (N,) or (N, 1) scores adds one column; one
giving (N, K) adds K columns named ``<name>/<attribute>``, from its ``attribute_names`` (required).

    >>> metric = uiqa_plugin.create_metric('feel')
    >>> result = profile_images(metric, ['photos/'], extra_scorers={'quality_model': trained_net})
"""
import importlib
import json
import os.path as osp
from dataclasses import dataclass

import torch
import torch.nn as nn

from uiqa_plugin.api import score_paths
from uiqa_plugin.perception.ensembles import base_name
from uiqa_plugin.scoring.table import decode_path, load_records


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


def read_score_table(path):
    """Read a score table written by ``write_table`` (.csv or .json) -> (rows, attribute names).

    rows: [{'path': str, attribute: float}]; the attributes are every column but ``path`` and
    ``random_weights`` (rows of a table scored with random weights keep ``random_weights: True``).
    Raises ValueError naming the file, row and column of a missing path or non-numeric score.
    """
    try:
        raw, columns = load_records(path)
    except OSError as exc:
        raise ValueError(f'{path}: cannot read score table ({exc.strerror or exc})') from None
    except json.JSONDecodeError as exc:
        raise ValueError(f'{path}: not valid JSON ({exc})') from None
    if 'path' not in columns:
        raise ValueError(f'{path}: no "path" column (columns: {", ".join(columns) or "none"})')
    attributes = [c for c in columns if c not in ('path', RANDOM_WEIGHTS_COLUMN)]
    if not attributes:
        raise ValueError(f'{path}: no score columns besides "path"')
    rows = []
    for number, record in enumerate(raw, start=1):
        row = {'path': decode_path(str(record.get('path') or ''))}
        if str(record.get(RANDOM_WEIGHTS_COLUMN, '')).lower() in ('1', '1.0', 'true'):
            row[RANDOM_WEIGHTS_COLUMN] = True  # scored by a random CLIP: the report shows the banner
        if not row['path']:
            raise ValueError(f'{path}: row {number} has no path')
        for column in attributes:
            try:
                row[column] = float(record.get(column))
            except (TypeError, ValueError):
                raise ValueError(f'{path}: row {number} ({row["path"]}), column {column!r}: '
                                 f'{record.get(column)!r} is not a number') from None
        rows.append(row)
    return rows, attributes


#: key that scripts/make_tiny_clip.py sets in its weight file: the weights are random
RANDOM_WEIGHTS_KEY = 'random_weights'
#: column of every table scored with random CLIP weights (1 on each row: a number, so that every reader of
#: score tables, resuming ones included, takes it), so the note travels with the scores
RANDOM_WEIGHTS_COLUMN = 'random_weights'
#: the caption of charts drawn from such scores
RANDOM_WEIGHTS_CAPTION = 'RANDOM WEIGHTS: these scores are meaningless'


def model_random_weights_reason(model):
    """``random_weights_reason`` for the CLIP a built model (CLIPIQA, CLIPUIQA, a profile scorer) runs on."""
    clip = getattr(getattr(model, 'metric', model), 'clip', None)
    source = getattr(clip, 'source', None)
    if source == 'random':
        return random_weights_reason(None)
    return random_weights_reason(source) if source else None


def mark_random_weights(rows, columns, reason):
    """(rows, columns) with a ``random_weights`` column set to 1 on each row when ``reason`` is not None."""
    if not reason:
        return rows, list(columns)
    columns = list(columns) + ([RANDOM_WEIGHTS_COLUMN] if RANDOM_WEIGHTS_COLUMN not in columns else [])
    return [dict(row, **{RANDOM_WEIGHTS_COLUMN: 1}) for row in rows], columns


def table_random_weights_reason(rows):
    """The reason to show for rows read by ``read_score_table`` from a table marked as random weights, or None."""
    if any(row.get(RANDOM_WEIGHTS_COLUMN) for row in rows):
        return 'These scores come from a CLIP with random weights (the table says so): they are meaningless.'
    return None


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
    from uiqa_plugin.clip.pretrained import is_torchscript
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


def match_columns(column_lists):
    """Score columns of several tables matched by attribute -> (axis names, [columns of table k]).

    A column present in every table matches itself. Otherwise ``name`` and ``name@ensemble``
    count as the same attribute (one table scored with the paper's pair, another with the
    ensemble), when each table has exactly one column of that attribute; the axis is ``name``.
    """
    shared = [n for n in column_lists[0] if all(n in cols for cols in column_lists[1:])]
    axes, columns = list(shared), [list(shared) for _ in column_lists]
    rest = [[c for c in cols if c not in shared] for cols in column_lists]
    for base in dict.fromkeys(base_name(c) for c in rest[0]):
        found = [[c for c in cols if base_name(c) == base] for cols in rest]
        if all(len(f) == 1 for f in found):
            axes.append(base)
            for k, f in enumerate(found):
                columns[k].append(f[0])
    return axes, columns


@dataclass
class JoinedTables:
    """Several score tables joined by image path (``join_score_tables``).

    labels: one per table; names: the matched axis names; columns[k]: table k's column for each
    name; by_path: {path: [row of table k]} for images in every table; notes: what was matched by
    attribute or left out, one sentence each; random_weights: the reason, if a table was scored so."""
    labels: list
    names: list
    columns: list
    by_path: dict
    notes: list
    random_weights: str = None


def join_score_tables(tables, labels=None):
    """Read several score tables and join them by path, columns matched by ``match_columns``.

    Raises ValueError when the labels do not fit or the tables share no score column.
    """
    if labels and len(labels) != len(tables):
        raise ValueError(f'{len(labels)} --label for {len(tables)} --table: give one label per table')
    loaded = [read_score_table(t) for t in tables]
    labels = list(labels) if labels else [osp.splitext(osp.basename(t))[0] for t in tables]
    names, columns = match_columns([attrs for _, attrs in loaded])
    if not names:
        listing = '; '.join(f'{t}: {", ".join(attrs)}' for t, (_, attrs) in zip(tables, loaded))
        raise ValueError(f'the tables share no score column (columns: {listing}). Columns match by name, '
                         'and NAME matches NAME@ensemble.')
    notes = []
    renamed = sorted({f'{c} as {n}' for cols in columns for n, c in zip(names, cols) if c != n})
    if renamed:
        notes.append(f'matched by attribute: {", ".join(renamed)}')
    used = {c for cols in columns for c in cols}
    dropped = sorted({n for _, attrs in loaded for n in attrs} - used)
    if dropped:
        notes.append(f'columns not in every table, left out: {", ".join(dropped)}')
    by_path = {}
    for k, (rows, _) in enumerate(loaded):
        for row in rows:
            by_path.setdefault(row['path'], [None] * len(loaded))[k] = row
    incomplete = [p for p, rs in by_path.items() if any(r is None for r in rs)]
    if incomplete:
        notes.append(f'{len(incomplete)} image(s) not in every table, left out (e.g. {incomplete[0]})')
    reason = next((r for r in (table_random_weights_reason(rows) for rows, _ in loaded) if r), None)
    return JoinedTables(labels, names, columns, {p: rs for p, rs in by_path.items() if p not in incomplete}, notes,
                        reason)


def chart_stems(paths, out_dir):
    """A unique file stem in ``out_dir`` for each image path (name clashes get -2, -3...)."""
    stems, used = [], set()
    for path in paths:
        base = osp.splitext(osp.basename(path))[0] or 'image'
        stem, k = base, 1
        while stem in used:
            k += 1
            stem = f'{base}-{k}'
        used.add(stem)
        stems.append(osp.join(out_dir, stem))
    return stems


def write_radar_charts(rows, attribute_names, out_dir, formats=('png', 'svg'), with_image=True, progress=True,
                       caption=None, on_problem=None):
    """One radar chart per row (image) into ``out_dir``; returns the written paths.

    caption: a line under each chart (``RANDOM_WEIGHTS_CAPTION`` for random weights); on_problem(message):
    told when an image cannot be read for its thumbnail (the chart is drawn without it).
    """
    from tqdm import tqdm

    from uiqa_plugin.data.image_io import ImageReadError, read_image
    from uiqa_plugin.perception.radar import radar_chart, save_chart, thumbnail
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
