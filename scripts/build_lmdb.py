"""Pack a dataset's images into an LMDB for basicsr's lmdb io_backend.

Examples:
    # the images listed in a KonIQ-style CSV (keys = the image_name column)
    python scripts/build_lmdb.py --dataroot datasets/koniq10k/1024x768 \
        --meta-file datasets/koniq10k/koniq10k_distributions_sets.csv --out datasets/koniq10k/1024x768.lmdb
    # every image under a folder (keys = paths relative to it)
    python scripts/build_lmdb.py --dataroot datasets/demo/256x192 --out datasets/demo/256x192.lmdb

Then use ``io_backend: {type: lmdb, db_paths: <out>}`` in the dataset options.
"""
import argparse
import os.path as osp
import sys

import uiqa_plugin  # noqa: F401  (before basicsr: installs the torchvision alias)
from uiqa_plugin.data.image_folder_dataset import list_images
from uiqa_plugin.data.lmdb_util import build_lmdb
from uiqa_plugin.data.table_io import format_name, read_table, require_columns


def keys_from_table(meta_file, name_column=None, name_template='{}'):
    header, rows = read_table(meta_file)
    if name_column is None:
        name_column = 'image_name' if 'image_name' in header else header[0]
    (idx,) = require_columns(meta_file, header, [name_column])
    return [format_name(name_template, row[idx]) for _, row in rows if idx < len(row) and row[idx]]


def fail(message):
    """One line on stderr, exit status 2: the user's input is wrong, a traceback would only hide that."""
    print(f'build_lmdb.py: {message}', file=sys.stderr)
    return 2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataroot', required=True, help='image folder')
    parser.add_argument('--out', required=True, help='output LMDB folder (e.g. images.lmdb)')
    parser.add_argument('--meta-file', help='CSV/TSV/xlsx listing the images; default: every image in dataroot')
    parser.add_argument('--name-column', help="image column of the meta file (default: image_name, else the first)")
    parser.add_argument('--name-template', default='{}', help="format of the names, e.g. '{}.jpg'")
    parser.add_argument('--no-recursive', action='store_true', help='folder mode: only the top folder')
    parser.add_argument('--map-size', type=int, help='LMDB map size in bytes (default: 1.5 x total file size)')
    parser.add_argument('--overwrite', action='store_true', help='write into an existing non-empty folder')
    args = parser.parse_args(argv)
    if not osp.isdir(args.dataroot):
        return fail(f'--dataroot {args.dataroot}: no such folder')
    try:
        if args.meta_file:
            keys = keys_from_table(args.meta_file, args.name_column, args.name_template)
        else:
            keys = list_images(args.dataroot, recursive=not args.no_recursive)
        n = build_lmdb(args.dataroot, keys, args.out, map_size=args.map_size, overwrite=args.overwrite)
    except (OSError, ValueError, KeyError) as exc:  # a missing meta file, duplicate or missing images...
        return fail(exc.args[0] if isinstance(exc, KeyError) and exc.args else
                    f'{exc.filename}: {exc.strerror}' if isinstance(exc, OSError) and exc.strerror else exc)
    print(f'wrote {n} images to {args.out} (keys as in {args.meta_file or args.dataroot}; meta_info.txt beside)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
