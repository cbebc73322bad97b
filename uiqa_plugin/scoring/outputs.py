"""Score tables on disk: checked before scoring, streamed while scoring, merged at the end.

While images are scored, every row goes at once to a part file next to the requested table,
``<out>.part-<job>-<rank>.jsonl`` (one JSON object a line, flushed per row), so a killed run
loses nothing it finished. At the end the part files (of all ranks, and of killed earlier
runs when resuming) are merged into ``<out>`` in input order, written to a unique temporary
name and renamed, then removed.

Beside the table, ``<out>.run.json`` records what made the rows (``provenance``) and the
images that could not be scored, with the reason. ``--resume`` reads ``<out>``, that record
and leftover part files, refuses them when another model or preprocessing made them, and
scores only the images they do not hold: images that failed before are skipped unless
``--retry-failed``. Images are compared by real path (``./photos/a.jpg`` is ``photos/a.jpg``).

One process at a time writes a table: ``OutputLock`` holds ``.<name>.lock`` in its folder for
the whole run, and a second run on the same ``--out`` is refused with the holder's pid.
"""
import glob
import json
import os
import os.path as osp

from uiqa_plugin.checkpoint_io import write_atomically
from uiqa_plugin.file_lock import FileLock, LockHeldError
from uiqa_plugin.scoring.provenance import differences
from uiqa_plugin.scoring.table import OutputError, read_table, write_table


def part_path(out, job, rank):
    return f'{out}.part-{job}-{rank}.jsonl'


def record_path(out):
    """The file beside a table that records what made its rows and which images failed."""
    return f'{out}.run.json'


def leftover_parts(out):
    """Part files of ``out`` left by runs that did not finish, sorted."""
    return sorted(glob.glob(glob.escape(out) + '.part-*-*.jsonl'))


class OutputInUseError(OutputError):
    """Another live process writes the same table."""


class OutputLock(FileLock):
    """The lock of one score table, ``.<name>.lock`` in its folder, held while a run writes it."""

    def __init__(self, out):
        out = osp.realpath(out)  # ./scores.csv and scores.csv are one table
        super().__init__(osp.join(osp.dirname(out), f'.{osp.basename(out)}.lock'))
        self.out = out

    def acquire(self):
        try:
            return super().acquire()
        except LockHeldError as exc:
            raise OutputInUseError(f'{self.out}: another uiqa-score run is writing this table ({exc.holder}); '
                                   'wait for it to end or stop it, or choose another --out') from None
        except OSError as exc:
            raise OutputError(f'{self.out}: cannot create the lock file {self.path} ({exc.strerror or exc})') from exc


class PartWriter:
    """Appends one JSON line per scored (or failed) image to a part file, flushed at once.

    The first line names the columns and what made the rows (``made_by``, see ``provenance``).
    """

    def __init__(self, path, columns, made_by=None):
        self.path = path
        try:
            self.file = open(path, 'a', encoding='ascii')  # json.dumps escapes everything else
            self._write({'columns': list(columns), 'made_by': made_by})
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
                              'this one are kept in it: free the space and rerun with --resume') from None

    def close(self):
        try:
            self.file.close()
        except OSError:  # the last flush already failed and was reported
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_made_by(where, recorded, made_by):
    if made_by is None or recorded is None:
        return
    changed = differences(recorded, made_by)
    if changed:
        raise OutputError(f'{where}: its rows were made by another model or preprocessing than this run '
                          f'({"; ".join(changed)}); resuming would mix them in one table: use the same options, '
                          'or another --out')


def read_part(path, columns, made_by=None):
    """(rows, failures) of one part file: rows {'path', column: float}, failures (path, message).

    A line cut short by a kill is ignored; a part file of other columns or made by another
    model than ``made_by`` (when given) is an OutputError.
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
            _check_made_by(path, record.get('made_by'), made_by)
        elif 'error' in record:
            failures.append((record['path'], record['error']))
        else:
            rows.append({'path': record['path'], **dict(zip(columns, record['scores']))})
    return rows, failures


def read_record(out):
    """The record beside a table: {'made_by': {...}, 'failed': [[path, message], ...]}, or None when absent."""
    path = record_path(out)
    if not osp.isfile(path):
        return None
    try:
        with open(path, encoding='utf-8') as f:
            record = json.load(f)
    except (OSError, ValueError) as exc:
        raise OutputError(f'{path}: cannot read the record of what made {out} ({exc}); move both away to score '
                          'again') from exc
    if not isinstance(record, dict):
        raise OutputError(f'{path}: not a record written by uiqa-score; move it and {out} away to score again')
    return record


def previous_rows(out, columns, made_by=None, table_columns=None):
    """(rows, failures) already recorded for ``out``: the table and its record, then part files of unfinished
    runs (later wins). Refused (OutputError naming the difference) when another model made them.

    columns: the model's scores, as part files hold them; table_columns: the table's columns when it
    adds marks to them (a ``random_weights`` column), default ``columns``.
    """
    rows, failures = [], []
    if osp.isfile(out):
        rows = read_table(out, columns if table_columns is None else table_columns)  # other columns: named first
        record = read_record(out)
        if record is None and made_by is not None:
            raise OutputError(f'{out}: has no record of what made its rows ({record_path(out)} is missing), so '
                              'resuming cannot tell whether this run computes the same scores; move it away, '
                              'or use another --out')
        if record is not None:
            _check_made_by(out, record.get('made_by'), made_by)
            failures.extend(tuple(item) for item in record.get('failed', ()))
    for part in leftover_parts(out):
        part_rows, part_failures = read_part(part, columns, made_by)
        rows.extend(part_rows)
        failures.extend(part_failures)
    return rows, failures


def merge_rows(paths, columns, earlier, parts, earlier_failures=()):
    """The final table: a row for each of ``paths`` that has one (input order), then earlier rows of other paths.

    Rows are matched by real path, so one file reached as ``./a.jpg`` and ``a.jpg`` has one row.
    earlier: rows from a resumed table and old part files; parts: this run's part files;
    earlier_failures: (path, message) recorded before. Returns (rows, failures of this run,
    all failures still without a row).
    """
    by_file, failures, failed = {}, [], {}
    for path, message in earlier_failures:
        failed[osp.realpath(path)] = (path, message)
    for row in earlier:
        by_file[osp.realpath(row['path'])] = row
    for part in parts:
        rows, part_failures = read_part(part, columns)
        failures.extend(part_failures)
        for path, message in part_failures:
            failed[osp.realpath(path)] = (path, message)
        for row in rows:
            by_file[osp.realpath(row['path'])] = row
    ordered = [by_file.pop(osp.realpath(p)) for p in paths if osp.realpath(p) in by_file]
    rows = ordered + list(by_file.values())
    scored = {osp.realpath(row['path']) for row in rows}
    return rows, failures, [item for real, item in failed.items() if real not in scored]


def _made_by_other(out, made_by):
    """Whether the table ``out`` on disk lacks a readable record saying that ``made_by`` made its rows."""
    try:
        record = read_record(out)
    except OutputError:
        return True
    return record is None or bool(differences(record.get('made_by') or {}, made_by or {}))


def write_merged(out, rows, columns, parts, made_by=None, failed=()):
    """Write the record, then the table, then remove the part files they replace. Raises OutputError naming the
    reason (a full disk, a vanished folder) without a traceback's chain of causes.

    The record goes first: a kill between the two leaves this run's record beside the earlier table (or none)
    and the part files, which ``--resume`` completes; a table without its record would be refused. A table of
    another computation is removed before that record can vouch for its rows (this run replaces it anyway).
    """
    try:
        if made_by is not None and osp.isfile(out) and _made_by_other(out, made_by):
            os.remove(out)
        record = {'made_by': made_by, 'failed': [list(item) for item in failed]}
        write_atomically(record_path(out), lambda f: json.dump(record, f, indent=2), 'w', encoding='utf-8')
        write_table(rows, ['path'] + list(columns), out)
    except OSError as exc:
        kept = [p for p in parts if osp.exists(p)]
        where = (f'the rows are kept in {", ".join(kept)}: rerun the same command with --resume'
                 if kept else 'the rows follow on standard output')
        raise OutputError(f'{out}: cannot write the table ({exc.strerror or exc}); {where}') from None
    for part in parts:
        try:
            os.remove(part)
        except FileNotFoundError:
            pass
