"""Agreement of attribute scores with human ratings: PLCC, SRCC, KRCC, 2AFC, bootstrap intervals, a bar chart.

The metric math lives in ``uiqa_plugin.metrics.iqa_metric``; this module pairs scores with
ratings per attribute and lays the results out as a table (one row per attribute).
"""
import os.path as osp
import warnings

import numpy as np

from uiqa_plugin.api import score_paths
from uiqa_plugin.metrics.iqa_metric import (DegenerateInputWarning, bootstrap_ci, calculate_2afc_accuracy,
                                            calculate_krcc, calculate_plcc, calculate_srcc)
from uiqa_plugin.perception.ensembles import base_name
from uiqa_plugin.perception.radar import series_color
from uiqa_plugin.perception.ratings import RatingsError, match_images, missing_rows

#: Table key -> metric function of (pred, target).
AGREEMENT_METRICS = {
    'plcc': calculate_plcc,
    'srcc': calculate_srcc,
    'krcc': calculate_krcc,
    '2afc': calculate_2afc_accuracy,
}


def differing_pairs(target):
    """Number of image pairs whose ratings differ (the pairs the 2AFC accuracy is taken over)."""
    _, counts = np.unique(np.asarray(target), return_counts=True)
    n = int(counts.sum())
    return n * (n - 1) // 2 - int(np.sum(counts * (counts - 1) // 2))


def agreement_table(scores, ratings, n_boot=1000, alpha=0.05, seed=0, progress=False):
    """Per attribute, how well ``scores`` agree with ``ratings``.

    scores, ratings: {attribute: (N,) array}, the same images in the same order (ratings in any range).
    Returns a list of rows {'attribute', 'n', 'pairs', 'plcc', 'plcc_low', 'plcc_high', 'srcc', ...,
    '2afc', '2afc_low', '2afc_high'}; ``*_low``/``*_high`` bound the (1 - alpha) percentile-bootstrap
    interval over images (``n_boot`` resamples, reproducible with ``seed``; ``n_boot=0`` skips them).
    Undefined metrics (e.g. constant ratings) are NaN, with a warning.
    """
    from tqdm import tqdm
    rows = []
    names = [a for a in ratings if a in scores]
    missing = [a for a in ratings if a not in scores]
    if missing:
        raise ValueError(f'no scores for rated attribute(s) {", ".join(missing)}')
    for attribute in tqdm(names, desc='agreement', unit='attr', disable=not progress):
        pred = np.asarray(scores[attribute], dtype=np.float64)
        target = np.asarray(ratings[attribute], dtype=np.float64)
        row = {'attribute': attribute, 'n': int(target.size), 'pairs': differing_pairs(target)}
        for key, fn in AGREEMENT_METRICS.items():
            row[key] = fn(pred, target)
            if n_boot:
                with warnings.catch_warnings():
                    # one warning per attribute is enough: the point estimate already raised it
                    warnings.simplefilter('ignore', DegenerateInputWarning)
                    low, high = bootstrap_ci(fn, pred, target, n_boot=n_boot, alpha=alpha, seed=seed)
            else:
                low = high = float('nan')
            row[f'{key}_low'], row[f'{key}_high'] = low, high
        rows.append(row)
    return rows


def table_columns(with_intervals=True):
    columns = ['attribute', 'n', 'pairs']
    for key in AGREEMENT_METRICS:
        columns += [key, f'{key}_low', f'{key}_high'] if with_intervals else [key]
    return columns


def plot_agreement(rows, path=None, title='Agreement with human ratings', confidence=0.95, caption=None):
    """Bar chart of the agreement table: PLCC/SRCC/KRCC per attribute (top), 2AFC accuracy (bottom),
    with bootstrap intervals as error bars. Saves to ``path`` (PNG/SVG/PDF by suffix) if given; returns the Figure.

    caption: a line under the chart (e.g. that the scores come from random weights). Names and the
    title are drawn as written (a '$' is not math)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [r['attribute'] for r in rows]
    x = np.arange(len(names))
    figure = Figure(figsize=(max(6.5, 0.75 * len(names) + 3.0), 7.0), dpi=110)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={'height_ratios': [3, 2]})

    def bars(ax, keys, width):
        for k, key in enumerate(keys):
            values = np.array([r[key] for r in rows], dtype=float)
            low = np.array([r.get(f'{key}_low', np.nan) for r in rows], dtype=float)
            high = np.array([r.get(f'{key}_high', np.nan) for r in rows], dtype=float)
            err = np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])
            err = np.where(np.isfinite(err), err, 0.0)
            offset = (k - (len(keys) - 1) / 2) * width
            ax.bar(x + offset, np.nan_to_num(values), width, yerr=err, capsize=3, label=key.upper(),
                   color=series_color(k), error_kw={'elinewidth': 1, 'ecolor': '#333333'})
        ax.grid(axis='y', color='#dddddd')
        ax.set_axisbelow(True)
        ax.legend(fontsize=8, frameon=False, loc='upper left', bbox_to_anchor=(1.0, 1.0))

    bars(top, ['plcc', 'srcc', 'krcc'], 0.26)
    top.axhline(0.0, color='#333333', linewidth=0.8)
    top.set_ylim(-1.0, 1.0)
    top.set_ylabel('correlation')
    bottom.axhline(0.5, color='#aa0000', linewidth=1, linestyle='--', label='chance')
    bars(bottom, ['2afc'], 0.5)
    bottom.set_ylim(0.0, 1.0)
    bottom.set_ylabel('2AFC accuracy')
    bottom.set_xticks(x)
    rotate = len(names) > 5 or max((len(n) for n in names), default=0) > 12
    bottom.set_xticklabels(names, rotation=35 if rotate else 0, ha='right' if rotate else 'center',
                           parse_math=False)
    figure.suptitle(f'{title} (error bars: {confidence:.0%} bootstrap intervals)', fontsize=11, parse_math=False)
    figure.tight_layout()
    if caption:
        figure.subplots_adjust(bottom=0.2 if rotate else 0.12)
        figure.text(0.5, 0.01, caption, ha='center', va='bottom', fontsize=10, color='#b00000', weight='bold',
                    parse_math=False)
    if path:
        import os
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        figure.savefig(path, bbox_inches='tight')
    return figure


def evaluate_ratings(metric, ratings, inputs, n_boot=1000, alpha=0.05, seed=0, batch_size=1, progress=True,
                     strict=True, scores=None):
    """Score the rated images with ``metric`` and compare with the human ratings.

    metric: e.g. ``create_metric(ratings.attribute_names)``; each of its attributes is paired with the
        ratings column of the same name, or of its base name (``happy@ensemble`` -> ``happy``), so one
        metric can compare the paper's pair with its ensemble on the same ratings.
    ratings: ``read_ratings(...)``; inputs: the image folder(s), see ``match_images``.
    strict: a rated image missing from the folder (or from ``scores``) stops the run (RatingsError), an
        unreadable one too (ImageReadError); else it is left out and named in ``skipped``.
    scores: (rows, attribute names) of an existing score table (``read_score_table``) to compare instead
        of scoring; ``metric`` may then be None.
    Returns (agreement rows, score rows [{'path', attribute: score}] in ratings order, skipped rows as
    (entry, reason): ``("row 4 (line 5) '77'", 'image not found')``).
    """
    names = list(scores[1]) if scores is not None else list(metric.attribute_names)
    targets = {}
    for name in names:
        for key in (name, base_name(name)):
            if key in ratings.values:
                targets[name] = ratings.values[key]
                break
    unscored = [a for a in ratings.values if a not in targets and not any(base_name(n) == a for n in targets)]
    if unscored:
        raise RatingsError(f'{ratings.path}: the {"table" if scores is not None else "metric"} does not score the '
                           f'rated attribute(s) {", ".join(unscored)}')
    if not targets:
        raise RatingsError(f'{ratings.path}: none of the attributes ({", ".join(names)}) has a ratings column')
    paths = match_images(ratings, inputs, skip_missing=not strict)
    skipped = [(entry, 'image not found') for entry in missing_rows(ratings, paths)]
    if scores is not None:
        by_file = {osp.realpath(row['path']): row for row in scores[0]}
        for n, path in enumerate(paths):
            if path is not None and osp.realpath(path) not in by_file:
                if strict:
                    raise RatingsError(f'{ratings.path}: row {n + 1} {ratings.images[n]!r} ({path}) has no row in '
                                       'the scores table')
                skipped.append((f'row {n + 1} (line {ratings.lines[n]}) {ratings.images[n]!r}',
                                'not in the scores table'))
                paths[n] = None
    else:
        result = score_paths(metric, [p for p in paths if p is not None], batch_size=batch_size, strict=strict,
                             progress=progress)
        by_file = {osp.realpath(row['path']): row for row in result.rows}
        failures = {osp.realpath(path): message for path, message in result.failures}
        for n, path in enumerate(paths):  # an unreadable image is left out like a missing one, with its reason
            if path is not None and osp.realpath(path) not in by_file:
                skipped.append((f'row {n + 1} (line {ratings.lines[n]}) {ratings.images[n]!r}',
                                failures.get(osp.realpath(path), f'{path}: not scored')))
                paths[n] = None
    score_rows = [dict(by_file[osp.realpath(p)], path=p) for p in paths if p is not None]
    kept = np.array([p is not None for p in paths])
    if not kept.any():
        raise RatingsError(f'{ratings.path}: none of the rated images was found')
    values = {name: np.array([row[name] for row in score_rows]) for name in targets}
    rows = agreement_table(values, {k: v[kept] for k, v in targets.items()}, n_boot=n_boot, alpha=alpha, seed=seed,
                           progress=progress)
    for row in rows:
        row['column'] = ratings.sources.get(row['attribute'], ratings.sources.get(base_name(row['attribute'])))
    return rows, score_rows, skipped
