"""Score tables on disk: checked before scoring, streamed while scoring, merged at the end.

While images are scored, every row goes at once to a part file next to the requested table,
``<out>.part-<job>-<rank>.jsonl`` (one JSON object a line, flushed per row), so a killed run
loses nothing it finished. At the end the part files (of all ranks, and of killed earlier
runs when resuming) are merged into ``<out>`` in input order, written to a unique temporary
name and renamed, then removed. ``--resume`` reads ``<out>`` and leftover part files and
scores only the paths they do not hold.

File names that are not valid UTF-8 are kept as they are (surrogate escapes in Python): as
their original bytes in CSV, as ``\\udcXX`` escapes in JSON.
"""
import glob
import json
import os
import os.path as osp
import tempfile

from uiqa_plugin.scoring.table import TABLE_SUFFIXES, OutputError, read_table, write_table  # noqa: F401


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


def part_path(out, job, rank):
    return f'{out}.part-{job}-{rank}.jsonl'


def leftover_parts(out):
    """Part files of ``out`` left by runs that did not finish, sorted."""
    return sorted(glob.glob(glob.escape(out) + '.part-*-*.jsonl'))


class PartWriter:
    """Appends one JSON line per scored (or failed) image to a part file, flushed at once."""

    def __init__(self, path, columns):
        self.path = path
        try:
            self.file = open(path, 'a', encoding='ascii')  # json.dumps escapes everything else
            self._write({'columns': list(columns)})
        except OSError as exc:
            raise OutputError(f'{path}: cannot write part file ({exc.strerror or exc})') from exc

    def _write(self, record):
        self.file.write(json.dumps(record) + '\n')
        self.file.flush()

    def write(self, path, scores=None, error=None):
        try:
            self._write({'path': path, 'scores': scores} if error is None else {'path': path, 'error': error})
        except OSError as exc:
            raise OutputError(f'{self.path}: cannot write part file ({exc.strerror or exc}); the rows before '
                              'this one are kept in it: free the space and rerun with --resume') from exc

    def close(self):
        self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_part(path, columns):
    """(rows, failures) of one part file: rows {'path', column: float}, failures (path, message).

    A line cut short by a kill is ignored; a part file of other columns is an OutputError.
    """
    rows, failures = [], []
    with open(path, encoding='ascii') as f:
        lines = f.read().split('\n')
    for number, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            if number >= len(lines) - 2:  # the last line of a killed run may be partial
                continue
            raise OutputError(f'{path}: line {number + 1} is not a JSON record; delete the file to score again')
        if 'columns' in record:
            if record['columns'] != list(columns):
                raise OutputError(f'{path}: left by a run with the columns {record["columns"]}, this run gives '
                                  f'{list(columns)}; use another --out or delete the part file')
        elif 'error' in record:
            failures.append((record['path'], record['error']))
        else:
            rows.append({'path': record['path'], **dict(zip(columns, record['scores']))})
    return rows, failures


def previous_rows(out, columns):
    """Rows already scored for ``out``: the table itself, then part files of unfinished runs (later wins)."""
    rows = read_table(out, columns) if osp.isfile(out) else []
    for part in leftover_parts(out):
        rows.extend(read_part(part, columns)[0])
    return rows


def merge_rows(paths, columns, earlier, parts):
    """The final table: a row for each of ``paths`` that has one (input order), then earlier rows of other paths.

    earlier: rows from a resumed table and old part files; parts: this run's part files.
    Returns (rows, failures of this run).
    """
    by_path, failures = {}, []
    for row in earlier:
        by_path[row['path']] = row
    for part in parts:
        rows, failed = read_part(part, columns)
        failures.extend(failed)
        for row in rows:
            by_path[row['path']] = row
    ordered = [by_path.pop(p) for p in paths if p in by_path]
    return ordered + list(by_path.values()), failures


def write_merged(out, rows, columns, parts):
    """Write the table, then remove the part files it replaces. Raises OutputError naming the reason."""
    try:
        write_table(rows, ['path'] + list(columns), out)
    except OSError as exc:
        kept = [p for p in parts if osp.exists(p)]
        where = (f'the rows are kept in {", ".join(kept)}: rerun the same command with --resume'
                 if kept else 'the rows follow on standard output')
        raise OutputError(f'{out}: cannot write the table ({exc.strerror or exc}); {where}') from exc
    for part in parts:
        try:
            os.remove(part)
        except FileNotFoundError:
            pass
