"""Score tables on disk: reading them back, joining several by image path, and the mark of scores
that come from a CLIP with random weights.

A score table is what ``uiqa-score`` and ``uiqa-profile`` write (``scoring.table``): a ``path``
column, one float column per attribute and, for scores of random weights, a ``random_weights``
column. Nothing here needs torch: charts and reports of saved tables start fast.
"""
import json
import os.path as osp
from dataclasses import dataclass

from uiqa_plugin.perception.ensembles import base_name
from uiqa_plugin.scoring.table import decode_path, load_records


#: column of every table scored with random CLIP weights (1 on each row: a number, so that every reader of
#: score tables, resuming ones included, takes it), so the note travels with the scores
RANDOM_WEIGHTS_COLUMN = 'random_weights'

#: the caption of charts drawn from such scores
RANDOM_WEIGHTS_CAPTION = 'RANDOM WEIGHTS: these scores are meaningless'


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
