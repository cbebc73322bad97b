"""Writing score tables (list of dicts, one per image) as CSV, JSON or a text table."""
import csv
import json
import os
import os.path as osp
import tempfile

TABLE_SUFFIXES = ('.csv', '.json')


def write_table(rows, columns, path):
    """Write rows to ``path``; the format follows the suffix (.csv or .json).

    Written to a temporary file with a unique name in the same folder, then renamed over
    ``path``: a reader never sees half a table, and concurrent writers of one path each
    leave a whole table (the last rename wins). Paths that are not valid UTF-8 keep their
    bytes in CSV (surrogate escapes) and are escaped in JSON.
    """
    suffix = osp.splitext(path)[1].lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f'{path}: output must end in .csv or .json')
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=osp.basename(path) + '.', suffix='.tmp')
    try:
        with open(fd, 'w', encoding='utf-8', errors='surrogateescape', newline='') as f:
            if suffix == '.csv':
                writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
                writer.writeheader()
                writer.writerows(rows)
            else:
                json.dump([{c: row.get(c) for c in columns} for row in rows], f, indent=2)
                f.write('\n')
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a table is as readable as any other
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def printable(text):
    """``text`` safe to print on a UTF-8 terminal: undecodable file-name bytes shown as \\xNN."""
    try:
        return text.encode('utf-8', 'surrogateescape').decode('utf-8', 'backslashreplace')
    except UnicodeEncodeError:
        return text.encode('utf-8', 'backslashreplace').decode('utf-8')


def format_table(rows, columns, digits=4):
    """Rows as an aligned plain-text table."""
    def cell(v):
        return f'{v:.{digits}f}' if isinstance(v, float) else printable(str(v))
    body = [[cell(row.get(c, '')) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ['  '.join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in body]
    return '\n'.join(lines)


def missing_folder(path):
    """The folder of ``path`` if it does not exist yet (writing there creates it: commands say so), else None."""
    folder = osp.dirname(osp.abspath(path))
    return None if osp.isdir(folder) else folder
