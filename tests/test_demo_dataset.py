"""The demo dataset: KonIQ format, content-disjoint splits, MOS falling with distortion level, readable files."""
import csv
import os
from collections import defaultdict

import numpy as np
import pytest

import uiqa_plugin  # noqa: F401  (before basicsr)
from basicsr.data import build_dataset
from uiqa_plugin.data.demo import (DEFAULT_SOURCES, DEMO_IMAGE_FOLDER, DEMO_SIZE, DISTORTIONS, make_demo_dataset,
                                   votes_for)
from uiqa_plugin.data.image_io import read_image

SOURCES = ('astronaut', 'coffee', 'chelsea', 'camera', 'coins', 'clock')


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    info = make_demo_dataset(str(out), size=(64, 48), levels=3, sources=SOURCES, split_counts=(4, 1, 1), seed=0,
                             progress=False)
    with open(info['csv'], newline='') as f:
        rows = list(csv.DictReader(f))
    return out, info, rows


def parse(name):
    stem = name.rsplit('.', 1)[0]
    source, kind = stem.rsplit('_', 1)
    level = 0 if kind == 'ref' else int(kind[-1])
    return source, kind.rstrip('0123456789'), level


def test_koniq_format_and_counts(demo):
    out, info, rows = demo
    assert list(rows[0]) == ['image_name', 'c1', 'c2', 'c3', 'c4', 'c5', 'c_total', 'MOS', 'SD', 'set']
    assert info['num_images'] == len(rows) == len(SOURCES) * (1 + 3 * len(DISTORTIONS))
    assert info['image_dir'] == os.path.join(str(out), '64x48')  # named for the size of the images it holds
    for row in rows:
        counts = [int(row[f'c{i}']) for i in range(1, 6)]
        assert sum(counts) == int(row['c_total']) and 0 <= float(row['MOS']) <= 100
        assert row['set'] in ('training', 'validation', 'test')


def test_splits_are_disjoint_by_content(demo):
    _, info, rows = demo
    by_split = defaultdict(set)
    for row in rows:
        by_split[row['set']].add(parse(row['image_name'])[0])
    assert {k: len(v) for k, v in by_split.items()} == {'training': 4, 'validation': 1, 'test': 1}
    assert not (by_split['training'] & by_split['validation'] or by_split['training'] & by_split['test']
                or by_split['validation'] & by_split['test'])
    assert set().union(*by_split.values()) == set(SOURCES)
    assert {k: set(v) for k, v in info['splits'].items()} == by_split


def test_mos_decreases_with_level(demo):
    _, _, rows = demo
    mos = {parse(r['image_name']): float(r['MOS']) for r in rows}
    for source in SOURCES:
        ref = mos[(source, 'ref', 0)]
        for kind in DISTORTIONS:
            series = [ref] + [mos[(source, kind, level)] for level in (1, 2, 3)]
            assert all(a > b + 10 for a, b in zip(series, series[1:])), (source, kind, series)


def test_files_readable_and_distortions_visible(demo):
    out, _, rows = demo
    images = {parse(r['image_name']): read_image(os.path.join(str(out), '64x48', r['image_name'])) for r in rows}
    assert all(img.shape == (48, 64, 3) for img in images.values())
    ref = images[('astronaut', 'ref', 0)]

    def detail(img):  # high-frequency energy
        return np.abs(np.diff(img, axis=1)).mean()
    blur = [detail(images[('astronaut', 'blur', lv)]) for lv in (1, 2, 3)]
    assert detail(ref) > blur[0] > blur[1] > blur[2]
    noise = [np.abs(images[('astronaut', 'noise', lv)] - ref).mean() for lv in (1, 2, 3)]
    assert noise[0] < noise[1] < noise[2]
    spread = [images[('astronaut', 'contrast', lv)].std() for lv in (1, 2, 3)]
    assert ref.std() > spread[0] > spread[1] > spread[2]


def test_dataset_class_reads_every_split(demo):
    out, _, rows = demo
    for phase, split in (('train', 'training'), ('val', 'validation'), ('test', 'test')):
        ds = build_dataset({'name': 'demo', 'type': 'KonIQ10kDataset', 'dataroot': os.path.join(str(out), '64x48'),
                            'phase': phase, 'views': ['image', 'fragments', 'salient']})
        assert len(ds) == sum(r['set'] == split for r in rows)
        item = ds[0]
        assert item['image'].shape == (3, 48, 64) and item['fragments'].shape == (3, 384, 384)


def test_deterministic_given_seed(demo, tmp_path):
    out, info, _ = demo
    again = make_demo_dataset(str(tmp_path), size=(64, 48), levels=3, sources=SOURCES, split_counts=(4, 1, 1),
                              seed=0, progress=False)
    with open(info['csv']) as a, open(again['csv']) as b:
        assert a.read() == b.read()
    for name in ('coins_noise2.jpg', 'chelsea_brightness3.jpg'):
        with open(os.path.join(info['image_dir'], name), 'rb') as a, \
                open(os.path.join(again['image_dir'], name), 'rb') as b:
            assert a.read() == b.read()


def test_defaults_and_votes():
    assert len(DEFAULT_SOURCES) * (1 + 3 * len(DISTORTIONS)) == 192  # the default size of the set
    counts, sd = votes_for(90.0, np.random.default_rng(0))
    mean_vote = (counts * np.arange(1, 6)).sum() / counts.sum()
    assert mean_vote == pytest.approx(1 + 4 * 0.9, abs=0.15) and 0.3 < sd < 1.0
    with pytest.raises(ValueError, match='must add up to the 3 sources'):
        make_demo_dataset('/nonexistent', sources=('astronaut', 'coffee', 'camera'), split_counts=(2, 1, 1))


def test_default_image_folder_is_named_for_the_image_size(tmp_path):
    """The default demo's folder says what it holds (256x192 images), not KonIQ's 1024x768."""
    assert DEMO_SIZE == (256, 192) and DEMO_IMAGE_FOLDER == '256x192'
    info = make_demo_dataset(str(tmp_path), sources=SOURCES[:3], distortions=('blur',), levels=1, progress=False)
    assert info['image_dir'] == os.path.join(str(tmp_path), '256x192')
    assert read_image(os.path.join(info['image_dir'], 'coffee_ref.jpg')).shape == (192, 256, 3)
    named = make_demo_dataset(str(tmp_path / 'named'), size=(64, 48), sources=SOURCES[:3], distortions=('blur',),
                              levels=1, image_folder='images', progress=False)
    assert named['image_dir'] == os.path.join(str(tmp_path / 'named'), 'images')
