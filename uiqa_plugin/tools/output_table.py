"""Writing score tables (list of dicts, one per image) as CSV, JSON or a text table."""
import csv
import json
import os
import os.path as osp


def write_table(rows, columns, path):
    """Write rows to ``path``; the format follows the suffix (.csv or .json)."""
    suffix = osp.splitext(path)[1].lower()
    if suffix not in ('.csv', '.json'):
        raise ValueError(f'{path}: output must end in .csv or .json')
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8', newline='') as f:  # write then rename: no half-written table
        if suffix == '.csv':
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
            writer.writeheader()
            writer.writerows(rows)
        else:
            json.dump([{c: row.get(c) for c in columns} for row in rows], f, indent=2)
            f.write('\n')
    os.replace(tmp, path)


def format_table(rows, columns, digits=4):
    """Rows as an aligned plain-text table."""
    def cell(v):
        return f'{v:.{digits}f}' if isinstance(v, float) else str(v)
    body = [[cell(row.get(c, '')) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(columns)]
    lines = ['  '.join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ['  '.join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths))) for r in body]
    return '\n'.join(lines)
