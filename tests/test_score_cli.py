"""uiqa-score end to end on generated images, against direct model computations."""
import csv
import json

import numpy as np
import pytest
import torch

from helpers import score, write_random_image
from uiqa_plugin.data.image_io import image_to_tensor, read_image


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'imgs'
    (folder / 'sub').mkdir(parents=True)
    write_random_image(folder / 'rgb.png', (48, 64, 3), rng)
    write_random_image(folder / 'photo.jpg', (48, 64, 3), rng, quality=90)
    write_random_image(folder / 'gray.png', (40, 56), rng)
    write_random_image(folder / 'sub' / 'alpha.png', (48, 64, 4), rng)
    write_random_image(folder / 'sub' / 'deep.png', (36, 52, 3), rng, bits=16)
    (folder / 'broken.jpg').write_bytes(b'\xff\xd8 truncated')
    (folder / 'notes.txt').write_text('not an image, ignored in folders')
    return folder


def expected_scores(tiny_metric_factory, paths, attributes):
    metric = tiny_metric_factory(attributes)
    out = {}
    with torch.no_grad():
        for p in paths:
            out[str(p)] = metric(image_to_tensor(read_image(p))[None])[0].tolist()
    return metric.attribute_names, out


def test_csv_scores_a_folder_with_a_bad_file(tiny_clip_files, tiny_metric_factory, image_folder, tmp_path, capsys):
    out = tmp_path / 'scores.csv'
    code = score(tiny_clip_files, [str(image_folder), '-a', 'quality,look,feel', '--batch-size', '2',
                                   '--out', str(out)])
    assert code == 1  # one input failed
    err = capsys.readouterr().err
    assert 'broken.jpg' in err and '1 input(s) not scored, 5 scored' in err and 'wrote 5 rows' in err
    with open(out, newline='') as f:
        rows = list(csv.DictReader(f))
    good = sorted(p for p in image_folder.rglob('*') if p.suffix in ('.png', '.jpg') and p.name != 'broken.jpg')
    names, expected = expected_scores(tiny_metric_factory, good, 'quality,look,feel')
    assert list(rows[0].keys()) == ['path'] + names and len(names) == 12
    assert sorted(r['path'] for r in rows) == sorted(expected)
    for row in rows:
        assert np.allclose([float(row[n]) for n in names], expected[row['path']], atol=1e-5)


def test_json_output_glob_and_custom_pair(tiny_clip_files, tiny_metric_factory, image_folder, tmp_path):
    out = tmp_path / 'scores.json'
    code = score(tiny_clip_files, [str(image_folder / '*.png'), '-a', 'sharpness,Vivid photo.|Faded photo.',
                                 '--out', str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    paths = sorted(image_folder.glob('*.png'))
    names, expected = expected_scores(tiny_metric_factory, paths, 'sharpness,Vivid photo.|Faded photo.')
    assert [d['path'] for d in data] == [str(p) for p in paths]
    for d in data:
        assert np.allclose([d[n] for n in names], expected[d['path']], atol=1e-5)


def test_table_on_stdout_and_strict(tiny_clip_files, image_folder, capsys):
    assert score(tiny_clip_files, [str(image_folder / 'rgb.png'), str(image_folder / 'gray.png')]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ['path', 'quality'] and len(lines) == 3
    assert score(tiny_clip_files, [str(image_folder), '--strict']) == 1
    err = capsys.readouterr().err
    assert 'broken.jpg: cannot decode image' in err and 'scored' not in err


def test_usage_errors(tiny_clip_files, tmp_path, capsys):
    assert score(tiny_clip_files, [str(tmp_path), '-a', 'hapy']) == 2
    assert "Did you mean happy" in capsys.readouterr().err
    assert score(tiny_clip_files, [str(tmp_path / 'none.png')]) == 1
    assert 'no such file or folder' in capsys.readouterr().err


def test_keep_pos_embed_flag_changes_the_encoder_path(tiny_clip_files, tiny_metric_factory, image_folder, tmp_path):
    out = tmp_path / 'pos.json'
    path = image_folder / 'rgb.png'
    assert score(tiny_clip_files, [str(path), '--keep-pos-embed', '--out', str(out)]) == 0
    got = json.loads(out.read_text())[0]['quality']
    metric = tiny_metric_factory('quality', keep_pos_embed=True)
    with torch.no_grad():
        expected = metric(image_to_tensor(read_image(path))[None])[0, 0].item()
        without = tiny_metric_factory('quality')(image_to_tensor(read_image(path))[None])[0, 0].item()
    assert got == pytest.approx(expected, abs=1e-5) and abs(expected - without) > 1e-4
