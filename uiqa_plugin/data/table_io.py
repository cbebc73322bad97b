"""Reading annotation tables (CSV/TSV or Excel .xlsx) into image records.

``read_table`` returns the header and the rows as strings; ``records_from_table`` picks
the image-name, score and split columns and checks every value, so that a missing
column or an empty/NaN score is reported with the file, the row and the column names.
The .xlsx reader needs no extra package (SPAQ ships its scores as .xlsx).
"""
import csv
import math
import os
import re
import zipfile
from collections import namedtuple
from xml.etree import ElementTree

from uiqa_plugin.terminal import printable

Record = namedtuple('Record', ['name', 'targets', 'split', 'where'])
Record.__doc__ = """One annotated image: name (relative path or key), targets (tuple of floats),
split (str or None) and where (e.g. 'koniq.csv line 12', for messages)."""


class AnnotationError(ValueError):
    """A problem in an annotation file; the message names the file (and row/column)."""


def read_table(path):
    """Read a .csv/.tsv/.txt (delimiter sniffed) or .xlsx (first sheet) table.

    Returns (header: list[str], rows: list[(line_number, list[str])]); blank rows are dropped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'annotation file not found: {path}')
    if path.lower().endswith(('.xlsx', '.xlsm')):
        table = list(_read_xlsx(path))
    else:
        with open(path, newline='', encoding='utf-8-sig') as f:
            text = f.read()
        try:
            dialect = csv.Sniffer().sniff(text[:4096], delimiters=',;\t')
        except csv.Error:
            dialect = csv.excel
        table = [(i, row) for i, row in enumerate(csv.reader(text.splitlines(), dialect), start=1)]
    table = [(i, [c.strip() for c in row]) for i, row in table if any(c.strip() for c in row)]
    if not table:
        raise AnnotationError(f'{path}: the file is empty')
    return table[0][1], table[1:]


def _column_index(header, name):
    """Index of column ``name``: exact match first, then ignoring case and surrounding spaces."""
    if name in header:
        return header.index(name)
    folded = [h.strip().lower() for h in header]
    key = str(name).strip().lower()
    return folded.index(key) if key in folded else None


def describe_header(header):
    """The columns of a header line for a message, or why they are not shown.

    A file that is not a table (``meta_file: /etc/passwd``) must not have its first line printed:
    column names are shown only when the line splits into several short cells.
    """
    if len(header) >= 2 and all(len(h) <= 64 for h in header):
        return f'columns present: {header}'
    return ("its first line does not split into columns at ',', ';' or tabs: is it an annotation table? "
            '(its content is not shown)')


def require_columns(path, header, names):
    """Indices of ``names`` in ``header``; raises naming the file, the missing and the present columns."""
    indices = [_column_index(header, n) for n in names]
    missing = [n for n, i in zip(names, indices) if i is None]
    if missing:
        raise AnnotationError(printable(f'{path}: missing column(s) {missing}; {describe_header(header)}'))
    return indices


def parse_score(value, where, column, name):
    """float(value), raising on empty, non-numeric and non-finite values with the row named."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise AnnotationError(f'{where}: column {column!r} of image {name!r} is not a number: {value!r}') from None
    if not math.isfinite(score):
        raise AnnotationError(f'{where}: column {column!r} of image {name!r} is {value!r} (not a finite score)')
    return score


def format_name(template, value):
    """Apply ``name_template`` ('{}.jpg', '{:05d}.png') to a name cell; numbers like '12.0' work with 'd'."""
    try:
        return template.format(value)
    except (ValueError, IndexError):
        return template.format(int(float(value)))


def records_from_table(path, name_column, target_columns, split_column=None, name_template='{}'):
    """Records from a table with one image per row.

    Args:
        path: .csv/.tsv/.xlsx file.
        name_column: column with the image name (relative path / LMDB key); None: the first column.
        target_columns: score columns (list); None: every other column except the split column.
        split_column: optional column holding the split of each row.
        name_template: format applied to the name cell, e.g. '{}.jpg' for image numbers.
    Returns:
        (records, target_names).
    """
    header, rows = read_table(path)
    name = header[0] if name_column is None else name_column
    if target_columns is None:
        target_columns = [h for h in header if h not in (name, split_column)]
    elif isinstance(target_columns, str):
        target_columns = [target_columns]
    needed = [name] + list(target_columns) + ([split_column] if split_column else [])
    indices = require_columns(path, header, needed)
    name_idx, target_idx = indices[0], indices[1:1 + len(target_columns)]
    split_idx = indices[-1] if split_column else None
    base = os.path.basename(path)
    records = []
    for line, row in rows:
        row = row + [''] * (len(header) - len(row))
        where = f'{path} line {line}' if not path.lower().endswith('.xlsx') else f'{path} row {line}'
        if not row[name_idx]:
            raise AnnotationError(f'{where}: empty image name in column {header[name_idx]!r}')
        image = format_name(name_template, row[name_idx])
        targets = tuple(parse_score(row[i], where, header[i], image) for i in target_idx)
        split = row[split_idx] if split_idx is not None else None
        records.append(Record(image, targets, split, f'{base} line {line}'))
    if not records:
        raise AnnotationError(printable(f'{path}: no data rows under the header ({describe_header(header)})'))
    return records, [header[i] for i in target_idx]


# --- minimal .xlsx reader: shared strings + first worksheet ------------------------------------

_NS = {'m': 'http://schemas.openxmlformats.org/spreadsheetml/2006/main'}
_REL_NS = '{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id'


def _first_sheet_path(zf):
    names = set(zf.namelist())
    try:
        workbook = ElementTree.fromstring(zf.read('xl/workbook.xml'))
        rels = ElementTree.fromstring(zf.read('xl/_rels/workbook.xml.rels'))
        sheet = workbook.find('m:sheets/m:sheet', _NS)
        rid = sheet.get(_REL_NS)
        for rel in rels:
            if rel.get('Id') == rid:
                target = rel.get('Target').lstrip('/')
                target = target if target.startswith('xl/') else 'xl/' + target
                if target in names:
                    return target
    except (KeyError, AttributeError, ElementTree.ParseError):
        pass
    sheets = sorted(n for n in names if re.fullmatch(r'xl/worksheets/sheet\d+\.xml', n))
    if not sheets:
        raise AnnotationError('no worksheet found')
    return sheets[0]


def _column_number(ref):
    letters = re.match(r'[A-Z]+', ref).group(0)
    number = 0
    for ch in letters:
        number = number * 26 + ord(ch) - ord('A') + 1
    return number - 1


def _read_xlsx(path):
    """Yield (row_number, [cell strings]) from the first sheet of an .xlsx file."""
    try:
        with zipfile.ZipFile(path) as zf:
            shared = []
            if 'xl/sharedStrings.xml' in zf.namelist():
                root = ElementTree.fromstring(zf.read('xl/sharedStrings.xml'))
                for si in root.findall('m:si', _NS):
                    shared.append(''.join(t.text or '' for t in si.iter(f'{{{_NS["m"]}}}t')))
            sheet = ElementTree.fromstring(zf.read(_first_sheet_path(zf)))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise AnnotationError(f'{path}: not a readable .xlsx file ({exc})') from exc
    for row in sheet.iterfind('m:sheetData/m:row', _NS):
        cells = {}
        for c in row.findall('m:c', _NS):
            kind = c.get('t')
            if kind == 'inlineStr':
                value = ''.join(t.text or '' for t in c.iter(f'{{{_NS["m"]}}}t'))
            else:
                v = c.find('m:v', _NS)
                value = '' if v is None or v.text is None else v.text
                if kind == 's' and value:
                    value = shared[int(value)]
            col = _column_number(c.get('r')) if c.get('r') else len(cells)
            cells[col] = value
        if cells:
            yield int(row.get('r', 0)), [cells.get(i, '') for i in range(max(cells) + 1)]
