"""Human attribute ratings: reading a ratings CSV and finding the rated images.

A ratings file has one row per image: an image column (file name, path or number) and one
numeric column per attribute, in any range, e.g. the CLIP-UIQA study's hand ratings
(``image number,natural,happy,aesthetics,new,complex,scary`` in 0..1, steps of 0.1). Column names
map to attribute names with ``column_map`` (``{'aesthetics': 'aesthetic'}``).

Every problem raises ``RatingsError`` naming the file, and the row / column / image at fault.
"""
import csv
import math
import os
import os.path as osp
import re
from dataclasses import dataclass, field

import numpy as np

from uiqa_plugin.api import collect_image_paths

# Normalised header names taken as the image column when none is given.
_IMAGE_COLUMN_NAMES = ('image', 'imagenumber', 'imagename', 'imageid', 'imagefile', 'img', 'filename', 'file',
                       'name', 'path', 'id')


class RatingsError(ValueError):
    """A ratings file that cannot be used; the message names the file and the row or column."""


@dataclass
class Ratings:
    """path: the file; image_column: its image column; images: the image entries (strings) in row order;
    lines: the file line of each row; values: {attribute name: (N,) float64}; sources: {attribute: column}."""
    path: str
    image_column: str
    images: list
    lines: list
    values: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    @property
    def attribute_names(self):
        return list(self.values)


def _normalise(name):
    return re.sub(r'[\s_\-.]+', '', name.strip().lower())


def _sniff_delimiter(header_line):
    counts = {d: header_line.count(d) for d in (',', ';', '\t')}
    best = max(counts, key=counts.get)
    return best if counts[best] else ','


def _find_column(header, name, path, what):
    if name in header:
        return name
    folded = [h for h in header if _normalise(h) == _normalise(name)]
    if len(folded) == 1:
        return folded[0]
    raise RatingsError(f'{path}: no column {name!r} ({what}); the columns are: {", ".join(map(repr, header))}')


def read_ratings(path, image_column=None, column_map=None, columns=None):
    """Read a ratings CSV (comma, semicolon or tab separated; UTF-8 with or without BOM).

    image_column: the column naming the images (default: one called image / image number / name /
        file / path / id..., else the first column).
    column_map: {ratings column: attribute name}; unmapped columns keep their own name.
    columns: the ratings columns to use (default: every column except the image column).
    Returns ``Ratings``. Empty or non-numeric cells, missing columns and repeated images raise
    ``RatingsError`` with the row number (1 = first data row) and the file line.
    """
    path = str(path)
    try:
        with open(path, encoding='utf-8-sig', newline='') as f:
            text = f.read()
    except OSError as exc:
        raise RatingsError(f'{path}: cannot read ratings file ({exc.strerror or exc})') from None
    except UnicodeDecodeError as exc:
        raise RatingsError(f'{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})') from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise RatingsError(f'{path}: the ratings file is empty')
    reader = csv.reader(lines[first:], delimiter=_sniff_delimiter(lines[first]))
    header = [h.strip() for h in next(reader)]
    if len(set(header)) != len(header):
        repeated = sorted({h for h in header if header.count(h) > 1})
        raise RatingsError(f'{path}: repeated column name(s) {", ".join(map(repr, repeated))}')
    if len(header) < 2:
        raise RatingsError(f'{path}: need an image column and at least one ratings column; header is {header}')

    if image_column is None:
        image_column = next((h for h in header if _normalise(h) in _IMAGE_COLUMN_NAMES), header[0])
    else:
        image_column = _find_column(header, image_column, path, 'the image column')
    column_map = {_find_column(header, source, path, f'named in the column map {source}={attribute}'): attribute
                  for source, attribute in (column_map or {}).items()}
    if columns is None:
        columns = [h for h in header if h != image_column]
    else:
        columns = [_find_column(header, c, path, 'asked for') for c in columns]
        if image_column in columns:
            raise RatingsError(f'{path}: column {image_column!r} is the image column, not a rating')
    if not columns:
        raise RatingsError(f'{path}: no ratings columns besides the image column {image_column!r}')
    attributes = [column_map.get(c, c) for c in columns]
    clash = sorted({a for a in attributes if attributes.count(a) > 1})
    if clash:
        raise RatingsError(f'{path}: several columns map to the attribute(s) {", ".join(map(repr, clash))}')

    index = {h: i for i, h in enumerate(header)}
    images, line_numbers, table, seen = [], [], {c: [] for c in columns}, {}
    for row in reader:
        line = first + reader.line_num  # line_num counts lines read by this reader, header included
        number = len(images) + 1
        if not any(cell.strip() for cell in row):
            continue  # blank line
        if len(row) != len(header):
            raise RatingsError(f'{path}: row {number} (line {line}) has {len(row)} cells, the header has '
                               f'{len(header)}')
        image = row[index[image_column]].strip()
        if not image:
            raise RatingsError(f'{path}: row {number} (line {line}): empty image entry in column {image_column!r}')
        if image in seen:
            raise RatingsError(f'{path}: row {number} (line {line}): image {image!r} was already rated in row '
                               f'{seen[image]}')
        seen[image] = number
        for column in columns:
            cell = row[index[column]].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                shown = 'empty' if not cell else f'{cell!r} is not a number'
                raise RatingsError(f'{path}: row {number} (line {line}), column {column!r}: {shown}')
            table[column].append(value)
        images.append(image)
        line_numbers.append(line)
    if not images:
        raise RatingsError(f'{path}: no ratings rows after the header')
    ratings = Ratings(path, image_column, images, line_numbers)
    for column, attribute in zip(columns, attributes):
        ratings.values[attribute] = np.asarray(table[column], dtype=np.float64)
        ratings.sources[attribute] = column
    return ratings


def _integer_key(text):
    """'7', '007', '7.0' -> 7; anything else -> None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value == int(value) and value >= 0 else None


def match_images(ratings, inputs, skip_missing=False):
    """Find the file of every rated image in ``inputs`` (folders, files, patterns).

    An image entry matches a file by relative path, file name, file stem, or number
    (``7`` matches ``7.jpg`` or ``007.png``). Returns the list of paths in ratings order.
    Raises RatingsError listing the rows whose image is missing or ambiguous; with ``skip_missing``
    a missing image is None in the list instead (``missing_rows`` names them), ambiguity still raises.
    """
    inputs = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(i) for i in inputs]
    paths, problems = collect_image_paths(inputs)
    if not paths:
        detail = '; '.join(f'{p}: {m}' for p, m in problems) or 'no images'
        raise RatingsError(f'{ratings.path}: cannot match ratings to images ({detail})')
    roots = [osp.abspath(i) for i in inputs if osp.isdir(i)]
    keys = {}

    def add(key, path):
        keys.setdefault(key, [])
        if path not in keys[key]:
            keys[key].append(path)

    for path in paths:
        full = osp.abspath(path)
        for root in roots:
            if full.startswith(root + osp.sep):
                add(('rel', osp.relpath(full, root).replace(osp.sep, '/')), path)
        name = osp.basename(path)
        stem = osp.splitext(name)[0]
        add(('name', name), path)
        add(('stem', stem), path)
        number = _integer_key(stem)
        if number is not None:
            add(('number', number), path)

    matched, missing, ambiguous, used = [], [], [], {}
    for number, (image, line) in enumerate(zip(ratings.images, ratings.lines), start=1):
        entry = image.replace('\\', '/')
        candidates = [('rel', entry), ('name', osp.basename(entry)), ('stem', entry),
                      ('stem', osp.splitext(osp.basename(entry))[0])]
        if _integer_key(entry) is not None:
            candidates.append(('number', _integer_key(entry)))
        found = next((keys[k] for k in candidates if k in keys), None)
        if found is None:
            missing.append(f'row {number} (line {line}) {image!r}')
            if skip_missing:
                matched.append(None)
        elif len(found) > 1:
            ambiguous.append(f'row {number} (line {line}) {image!r} matches {", ".join(found)}')
        elif found[0] in used:
            ambiguous.append(f'row {number} (line {line}) {image!r} is the same file as row {used[found[0]]} '
                             f'({found[0]})')
        else:
            used[found[0]] = number
            matched.append(found[0])
    where = ', '.join(map(str, inputs))
    if missing and not skip_missing:
        examples = ', '.join(osp.basename(p) for p in paths[:3])
        shown = '; '.join(missing[:10]) + (f'; and {len(missing) - 10} more' if len(missing) > 10 else '')
        raise RatingsError(f'{ratings.path}: {len(missing)} rated image(s) not found in {where}: {shown} '
                           f'(files there look like: {examples})')
    if ambiguous:
        raise RatingsError(f'{ratings.path}: ambiguous image entries in {where}: ' + '; '.join(ambiguous[:10]))
    return matched


def missing_rows(ratings, paths):
    """'row N (line L) 'image'' for each rated image that ``match_images(..., skip_missing=True)`` did not find."""
    return [f'row {n} (line {line}) {image!r}'
            for n, (image, line, path) in enumerate(zip(ratings.images, ratings.lines, paths), start=1) if path is None]
