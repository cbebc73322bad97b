"""Packing image files into an LMDB that basicsr's FileClient (lmdb backend) reads.

Values are the encoded file bytes (JPEG/PNG as on disk, not decoded pixels), so the
database is about as large as the images and decoding goes through ``decode_image``
exactly as for files on disk. Keys are the image names as written in the annotation
file ('826373.jpg', or 'sub/a.png' for a folder), ASCII because basicsr encodes keys
with ASCII. The database folder also gets basicsr's ``meta_info.txt``: one line per
image, ``<key> (<h>,<w>,<c>) <format>``; unlike basicsr's own databases, our keys keep
their file extension, so the datasets take keys from the annotation file, not from
``meta_info.txt``.
"""
import os
import os.path as osp

from PIL import Image


def _image_shape(path):
    """(h, w, c, format) from the file header, without decoding pixels; c is the number of bands."""
    with Image.open(path) as img:
        return img.height, img.width, len(img.getbands()), img.format or '?'


def build_lmdb(dataroot, keys, lmdb_path, map_size=None, batch=1000, progress=True, overwrite=False):
    """Write the files ``dataroot/<key>`` into a new LMDB at ``lmdb_path`` under ``key``.

    Args:
        dataroot: image folder. keys: image names relative to it (ASCII, unique).
        lmdb_path: output folder, conventionally ending in '.lmdb'.
        map_size: LMDB map size in bytes; default 1.5 x the total file size + 10 MiB.
        batch: images per write transaction.
        overwrite: allow writing into an existing non-empty folder.
    Returns:
        number of images written.
    """
    import lmdb
    keys = list(keys)
    if not keys:
        raise ValueError('build_lmdb: no images to write')
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})[:5]
        raise ValueError(f'build_lmdb: duplicate image names, e.g. {dup}')
    bad = [k for k in keys if not k.isascii()]
    if bad:
        raise ValueError(f'build_lmdb: LMDB keys must be ASCII (basicsr encodes them so); non-ASCII names: {bad[:5]}')
    paths = [osp.join(dataroot, k) for k in keys]
    missing = [p for p in paths if not osp.isfile(p)]
    if missing:
        raise FileNotFoundError(f'build_lmdb: {len(missing)} of {len(keys)} images are missing, e.g. {missing[:5]}')
    if osp.exists(lmdb_path) and os.listdir(lmdb_path) and not overwrite:
        raise FileExistsError(f'build_lmdb: {lmdb_path} exists and is not empty (pass overwrite=True / --overwrite)')
    total = sum(osp.getsize(p) for p in paths)
    map_size = map_size or int(total * 1.5) + (10 << 20)

    try:
        from tqdm import tqdm
        items = tqdm(list(zip(keys, paths)), desc=f'LMDB {osp.basename(lmdb_path)}', unit='img', disable=not progress)
    except ImportError:  # pragma: no cover
        items = list(zip(keys, paths))

    os.makedirs(lmdb_path, exist_ok=True)
    env = lmdb.open(lmdb_path, map_size=map_size)
    meta_lines = []
    txn = env.begin(write=True)
    try:
        for i, (key, path) in enumerate(items, start=1):
            with open(path, 'rb') as f:
                txn.put(key.encode('ascii'), f.read())
            try:
                h, w, c, fmt = _image_shape(path)
            except Exception as exc:  # a corrupt file is stored anyway; the dataset reports it when read
                h = w = c = 0
                fmt = f'unreadable:{type(exc).__name__}'
            meta_lines.append(f'{key} ({h},{w},{c}) {fmt}\n')
            if i % batch == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.commit()
    except BaseException:
        txn.abort()
        raise
    finally:
        env.close()
    with open(osp.join(lmdb_path, 'meta_info.txt'), 'w', encoding='utf-8') as f:
        f.writelines(meta_lines)
    return len(keys)


def read_lmdb_keys(lmdb_path):
    """All keys of an LMDB, as str, in key order."""
    import lmdb
    env = lmdb.open(lmdb_path, readonly=True, lock=False, readahead=False)
    try:
        with env.begin(write=False) as txn:
            return [k.decode('ascii') for k in txn.cursor().iternext(keys=True, values=False)]
    finally:
        env.close()
