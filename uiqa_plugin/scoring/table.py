"""The score-table format: rows (dicts, one per image) as CSV or JSON files, or a text table.

One writer and one reader, so every command reads what another wrote with the same encoding:
UTF-8, which every CSV and JSON reader opens (pandas, spreadsheets, ``json``).

The ``path`` column holds a file name as it is, unless writing it plainly would be unsafe or
ambiguous: then it is written in double quotes with backslash escapes (``encode_path``):
names that are not valid UTF-8 (each such byte as ``\\xNN``), names with control characters
(newlines, terminal escape codes), and names starting with ``"`` or with ``= + - @``, which
spreadsheets would run as formulas. ``decode_path`` gives the exact name back. Scores that
are not finite numbers are never written (empty in CSV, ``null`` in JSON).
"""
import csv
import json
import math
import os
import os.path as osp
import tempfile

from uiqa_plugin.checkpoint_io import write_atomically
from uiqa_plugin.terminal import is_control, printable  # noqa: F401 (printable: part of the table tools' API)

TABLE_SUFFIXES = ('.csv', '.json')

# first characters that make a spreadsheet read a cell as a formula
_FORMULA_START = ('=', '+', '-', '@')


def encode_path(path):
    """A file name as the ``path`` column holds it: as it is, or quoted with escapes when unsafe (module doc)."""
    text = os.fsdecode(path) if isinstance(path, bytes) else str(path)
    if text and not text.startswith(('"',) + _FORMULA_START) and not any(is_control(ch) for ch in text):
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xdc80 <= code <= 0xdcff:  # an undecodable byte (surrogate escape)
            out.append(f'\\x{code - 0xdc00:02x}')
        elif ch in '\\"':
            out.append('\\' + ch)
        elif is_control(ch):
            out.append(f'\\x{code:02x}' if code < 0x80 else f'\\u{code:04x}')
        else:
            out.append(ch)
    return '"' + ''.join(out) + '"'


def decode_path(cell):
    """The exact file name (``str``, undecodable bytes as surrogate escapes) of a ``path`` cell."""
    if not (len(cell) >= 2 and cell[0] == '"' and cell[-1] == '"'):
        return cell
    body, raw, i = cell[1:-1], bytearray(), 0
    while i < len(body):
        ch = body[i]
        if ch == '\\' and i + 1 < len(body):
            kind = body[i + 1]
            if kind == 'x':
                raw.append(int(body[i + 2:i + 4], 16))
                i += 4
                continue
            if kind == 'u':
                raw.extend(chr(int(body[i + 2:i + 6], 16)).encode('utf-8', 'surrogatepass'))
                i += 6
                continue
            raw.extend(kind.encode('utf-8'))
            i += 2
            continue
        raw.extend(ch.encode('utf-8'))
        i += 1
    return os.fsdecode(bytes(raw))


def _cell(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # never a plain NaN / inf in a table
    return value


class OutputError(ValueError):
    """A score table that cannot be written or resumed; the message names the path and the reason."""


def check_output_path(path):
    """Fail before any work when a table cannot be written at ``path``; creates its folder.

    Checks the suffix (.csv / .json), that the path is not a folder or a device (/dev/null),
    and that a file can be created in its folder.
    """
    suffix = osp.splitext(path)[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise OutputError(f'{path}: unknown table format {suffix or "(no suffix)"}; '
                          f'name a file ending in {" or ".join(TABLE_SUFFIXES)}')
    if osp.isdir(path):
        raise OutputError(f'{path}: is a folder; name a file in it, e.g. {osp.join(path, "scores.csv")}')
    if osp.exists(path) and not osp.isfile(path):
        raise OutputError(f'{path}: is not a regular file (a device or pipe); name a file ending in .csv or .json')
    folder = osp.dirname(osp.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=osp.basename(path) + '.', suffix='.probe'):
            pass
    except OSError as exc:
        raise OutputError(f'{path}: cannot write in folder {folder} ({exc.strerror or exc})') from exc


def write_table(rows, columns, path):
    """Write rows to ``path``; the format follows the suffix (.csv or .json).

    Written to a temporary file with a unique name in the same folder, then renamed over
    ``path``: a reader never sees half a table, and concurrent writers of one path each
    leave a whole table (the last rename wins). The ``path`` column goes through
    ``encode_path``; non-finite scores are left empty (CSV) or null (JSON).
    """
    suffix = osp.splitext(path)[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f'{path}: output must end in .csv or .json')
    records = [{c: encode_path(row[c]) if c == 'path' and c in row else _cell(row.get(c)) for c in columns}
               for row in rows]

    def write(f):
        if suffix == '.csv':
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)
        else:
            json.dump(records, f, indent=2, allow_nan=False)
            f.write('\n')
    write_atomically(path, write, 'w', encoding='utf-8', newline='')


def format_table(rows, columns, digits=4):
    """Rows as an aligned plain-text table."""
    def cell(v):
        return f'{v:.{digits}f}' if isinstance(v, float) else printable(str(v), keep_newlines=False)
    body = [[cell(row.get(c, '')) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ['  '.join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in body]
    return '\n'.join(lines)


def load_records(path):
    """(records, columns) of a .csv or .json table as written by ``write_table``: one dict of strings (CSV) or
    values (JSON) per row. The one place that opens score tables: UTF-8, a leading BOM (a spreadsheet's
    export) skipped. Raises OSError, ValueError (json.JSONDecodeError included) for the callers to word."""
    suffix = osp.splitext(str(path))[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f'{path}: a score table must end in .csv or .json')
    with open(path, encoding='utf-8-sig', newline='') as f:
        if suffix == '.json':
            records = json.load(f)
            if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                raise ValueError(f'{path}: expected a JSON list of objects, one per image')
            return records, list(records[0]) if records else []
        reader = csv.DictReader(f)
        records = list(reader)
        return records, list(reader.fieldnames or [])


def read_table(path, columns):
    """Rows of a table written by ``write_table`` (CSV or JSON), checked to have ``['path'] + columns``."""
    expected = ['path'] + list(columns)
    try:
        data, found = load_records(path)
    except (OSError, ValueError) as exc:
        raise OutputError(f'{path}: cannot read it to resume ({exc}); move it away or drop --resume') from exc
    found = found or expected  # an empty table
    if found != expected:
        raise OutputError(f'{path}: has the columns {found}, this run gives {expected}; '
                          'use another --out to resume with other attributes')
    try:
        return [{'path': decode_path(row['path']), **{c: float(row[c]) for c in columns}} for row in data]
    except (TypeError, ValueError) as exc:
        raise OutputError(f'{path}: a score is not a number ({exc}); cannot resume from it') from exc


def missing_folder(path):
    """The folder of ``path`` if it does not exist yet (writing there creates it: commands say so), else None."""
    folder = osp.dirname(osp.abspath(path))
    return None if osp.isdir(folder) else folder
