"""LMDB: built from a CSV or a folder, read through basicsr's FileClient, identical to disk."""
import os

import numpy as np
import pytest
import torch

import uiqa_plugin  # noqa: F401  (before basicsr)
from basicsr.data import build_dataset
from helpers import load_script, write_random_image
from uiqa_plugin.data.image_io import ImageReadError
from uiqa_plugin.data.lmdb_util import build_lmdb, read_lmdb_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = 'image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set\n'


@pytest.fixture()
def fixture(tmp_path):
    """Three JPEG/PNG images of different sizes and a KonIQ CSV listing two of them."""
    rng = np.random.default_rng(0)
    root = tmp_path / 'img'
    (root / 'sub').mkdir(parents=True)
    write_random_image(root / 'a.jpg', (30, 40, 3), rng, quality=90)
    write_random_image(root / 'b.png', (20, 24), rng)  # grayscale
    write_random_image(root / 'sub' / 'c.png', (16, 16, 3), rng)
    csv = tmp_path / 'koniq10k_distributions_sets.csv'
    csv.write_text(HEADER + 'a.jpg,1,1,1,1,1,5,40,1,test\nb.png,1,1,1,1,1,5,60,1,test\n')
    return tmp_path, root, csv


def test_script_builds_from_csv_with_meta_info(fixture):
    tmp_path, root, csv = fixture
    out = tmp_path / 'db.lmdb'
    assert load_script('build_lmdb').main(['--dataroot', str(root), '--meta-file', str(csv), '--out', str(out)]) == 0
    assert read_lmdb_keys(str(out)) == ['a.jpg', 'b.png']
    assert (out / 'meta_info.txt').read_text().splitlines() == ['a.jpg (30,40,3) JPEG', 'b.png (20,24,1) PNG']
    import lmdb
    env = lmdb.open(str(out), readonly=True, lock=False)
    with env.begin() as txn:  # encoded file bytes, not pixels
        assert txn.get(b'a.jpg') == (root / 'a.jpg').read_bytes()
    env.close()


def test_script_builds_from_folder_recursively(fixture, capsys):
    tmp_path, root, _ = fixture
    out = tmp_path / 'folder.lmdb'
    load_script('build_lmdb').main(['--dataroot', str(root), '--out', str(out)])
    assert read_lmdb_keys(str(out)) == ['a.jpg', 'b.png', 'sub/c.png']
    assert load_script('build_lmdb').main(['--dataroot', str(root), '--out', str(out)]) == 2
    assert 'exists and is not empty' in capsys.readouterr().err


def test_lmdb_and_disk_give_identical_tensors(fixture):
    tmp_path, root, csv = fixture
    build_lmdb(str(root), ['a.jpg', 'b.png'], str(tmp_path / 'k.lmdb'), progress=False)
    views = {'image': {}, 'fragments': {'grid': 2, 'patch': 8}, 'salient': {'size': 12}}
    common = {'name': 'k', 'type': 'KonIQ10kDataset', 'meta_file': str(csv), 'phase': 'test', 'views': views}
    disk = build_dataset({**common, 'dataroot': str(root)})
    db = build_dataset({**common, 'io_backend': {'type': 'lmdb', 'db_paths': str(tmp_path / 'k.lmdb')}})
    assert len(disk) == len(db) == 2
    for i in range(2):
        a, b = disk[i], db[i]
        assert a['key'] == b['key']
        for view in ('image', 'fragments', 'salient', 'target'):
            assert torch.equal(a[view], b[view]), view
    # also through a worker process (the LMDB handle is opened there, not inherited)
    loader = torch.utils.data.DataLoader(db, batch_size=1, num_workers=1)
    assert [batch['key'][0] for batch in loader] == ['a.jpg', 'b.png']
    assert torch.equal(db[0]['image'], disk[0]['image'])  # the parent's handle still works


def test_lmdb_missing_key_and_bad_names(fixture):
    tmp_path, root, csv = fixture
    build_lmdb(str(root), ['a.jpg'], str(tmp_path / 'one.lmdb'), progress=False)
    opt = {'name': 'k', 'type': 'KonIQ10kDataset', 'meta_file': str(csv), 'phase': 'test',
           'io_backend': {'type': 'lmdb', 'db_paths': str(tmp_path / 'one.lmdb')}}
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images are missing in LMDB .*'b.png'"):
        build_dataset(opt)
    ds = build_dataset({**opt, 'check_files': False})
    with pytest.raises(ImageReadError, match="key 'b.png': key not found in the database"):
        ds[1]
    with pytest.raises(ValueError, match='must be ASCII'):
        build_lmdb(str(root), ['é.jpg'], str(tmp_path / 'x.lmdb'), progress=False)
    with pytest.raises(FileNotFoundError, match='1 of 1 images are missing'):
        build_lmdb(str(root), ['nope.jpg'], str(tmp_path / 'y.lmdb'), progress=False)
