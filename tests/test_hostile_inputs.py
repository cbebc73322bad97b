"""A corpus of hostile files scored together with good ones: every good image scored, every bad one
named with its reason, exit status 1, no traceback, no hang (symbolic link cycles)."""
import csv
import io
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import random_pixels, write_random_image
from uiqa_plugin.api import collect_image_paths, score_paths
from uiqa_plugin.scoring.table import decode_path
from uiqa_plugin.data.image_io import image_to_tensor, read_image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NON_UTF8 = os.fsdecode(b'caf\xe9.png')  # a Latin-1 file name: not valid UTF-8


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    """(folder, good names, {bad name: words its reason must contain})."""
    root = tmp_path_factory.mktemp('hostile')
    folder = root / 'corpus'
    (folder / 'sub').mkdir(parents=True)
    rng = np.random.default_rng(5)

    def rgb(h, w):
        return Image.fromarray(random_pixels(rng, (h, w, 3)))

    rgb(48, 64).save(folder / 'good.png')
    rgb(40, 52).save(folder / 'sub' / 'good.jpg', quality=90)
    buf = io.BytesIO()
    rgb(60, 80).save(buf, 'JPEG', quality=90)
    (folder / 'truncated.jpg').write_bytes(buf.getvalue()[:len(buf.getvalue()) // 2])
    (folder / 'empty.png').write_bytes(b'')
    rgb(44, 60).save(folder / 'png_named.jpg', 'PNG')  # wrong extension, good content
    (folder / 'text_named.png').write_text('this is not an image')
    write_random_image(folder / 'cmyk.jpg', (40, 48, 4), rng, mode='CMYK')
    write_random_image(folder / 'deep16.png', (36, 50, 3), rng, bits=16)
    frames = [Image.fromarray(random_pixels(rng, (32, 40))).convert('P') for _ in range(3)]
    frames[0].save(folder / 'animated.gif', save_all=True, append_images=frames[1:], duration=50, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    rgb(40, 70).save(folder / 'rotated.jpg', quality=95, exif=exif)
    Image.fromarray(np.array([[[10, 200, 30]]], dtype=np.uint8)).save(folder / 'one_pixel.png')
    rgb(3, 50000).save(folder / 'strip.png')
    rgb(38, 46).save(os.path.join(os.fsencode(folder), b'caf\xe9.png'))
    os.symlink('..', folder / 'sub' / 'up')  # a link to its parent
    os.symlink(str(folder / 'sub'), folder / 'loop_a')  # and two links that form a second cycle
    os.symlink(str(folder), folder / 'sub' / 'loop_b')
    os.symlink('missing.png', folder / 'dangling.png')
    good = ['good.png', 'sub/good.jpg', 'png_named.jpg', 'cmyk.jpg', 'deep16.png', 'animated.gif', 'rotated.jpg',
            'one_pixel.png', NON_UTF8]
    bad = {'truncated.jpg': 'truncated', 'empty.png': 'file is empty', 'text_named.png': 'no format Pillow reads',
           'strip.png': 'aspect ratio 16667:1', 'dangling.png': 'broken symbolic link'}
    return folder, good, bad


def test_symlink_cycles_do_not_hang_and_give_each_file_once(corpus):
    folder, good, bad = corpus
    with ThreadPoolExecutor(1) as pool:
        paths, problems = pool.submit(collect_image_paths, [str(folder)]).result(timeout=30)
    names = sorted(os.path.relpath(p, folder) for p in paths)
    assert names == sorted(good + [b for b in bad if b != 'dangling.png'])  # real paths, no link repeats
    assert problems == [(str(folder / 'dangling.png'), 'broken symbolic link (its target is missing or loops)')]
    with ThreadPoolExecutor(1) as pool:  # '**' patterns walk the same way
        found = pool.submit(collect_image_paths, [str(folder / '**' / '*.jpg')]).result(timeout=30)[0]
    assert sorted(os.path.relpath(p, folder) for p in found) == ['cmyk.jpg', 'png_named.jpg', 'rotated.jpg',
                                                                 'sub/good.jpg', 'truncated.jpg']


@pytest.mark.slow  # uiqa-score in a subprocess
def test_the_command_scores_every_good_file_and_names_every_bad_one(corpus, tiny_clip_files, tmp_path):
    folder, good, bad = corpus
    out = tmp_path / 'scores.csv'
    cmd = [sys.executable, '-m', 'uiqa_plugin.tools.score', str(folder), '--out', str(out), '--batch-size', '3',
           '--workers', '2', '--clip-model', tiny_clip_files['config'],
           '--clip-pretrained', tiny_clip_files['openai'], '--device', 'cpu', '--no-progress']
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    run = subprocess.run(cmd, capture_output=True, timeout=240, env=env)
    err = run.stderr.decode('utf-8', 'replace')
    assert run.returncode == 1, err  # documented: 1 when some inputs were not scored
    assert 'Traceback' not in err
    for name, reason in bad.items():
        lines = [line for line in err.splitlines() if f'{os.sep}{name}' in line]
        assert lines and reason in lines[0], (name, err)
    assert f'{len(bad)} input(s) not scored, {len(good)} scored' in err
    with open(out, encoding='utf-8', newline='') as f:  # valid UTF-8 whatever the file names
        rows = [{**r, 'path': decode_path(r['path'])} for r in csv.DictReader(f)]
    assert sorted(os.path.relpath(r['path'], folder) for r in rows) == sorted(good)  # exact names, recovered
    assert all(0.0 <= float(r['quality']) <= 1.0 for r in rows)

    metric_rows = {os.path.relpath(r['path'], folder): float(r['quality']) for r in rows}
    from uiqa_plugin.api import create_metric
    metric = create_metric('quality', clip_model=tiny_clip_files['config'],
                           clip_pretrained=tiny_clip_files['openai'], device='cpu')
    shown = np.rot90(np.asarray(Image.open(folder / 'rotated.jpg').convert('RGB')), k=-1)  # EXIF 6 by hand
    assert shown.shape[:2] == (70, 40)
    with torch.no_grad():
        expected = metric(image_to_tensor(shown.astype(np.float32) / 255)[None])[0, 0].item()
        deep = metric(image_to_tensor(read_image(folder / 'deep16.png'))[None])[0, 0].item()
    assert metric_rows['rotated.jpg'] == pytest.approx(expected, abs=1e-6)
    assert metric_rows['deep16.png'] == pytest.approx(deep, abs=1e-6)


def test_a_multi_view_model_survives_the_corpus(corpus, tiny_clip_files):
    """The path of --checkpoint models (fragments and centre patch derived from tiny images too)."""
    from uiqa_plugin.archs.clip_uiqa_arch import CLIPUIQA
    folder, good, bad = corpus
    torch.manual_seed(0)
    model = CLIPUIQA(views=['image', 'fragments', 'salient'], clip_model=tiny_clip_files['config'],
                     clip_pretrained=tiny_clip_files['openai'], prompt='fixed', head='regressor').eval()
    model.view_options = {'image': {'short_side': 40}, 'fragments': {'grid': 2, 'patch': 16}, 'salient': {'size': 32}}
    model.output_names = ['score']
    result = score_paths(model, [str(folder)], batch_size=2, workers=0, progress=False)
    assert sorted(os.path.relpath(r['path'], folder) for r in result.rows) == sorted(good)
    assert sorted(os.path.relpath(p, folder) for p, _ in result.failures) == sorted(bad)


def test_undecodable_names_are_printed_escaped(corpus, tiny_clip_files, capsys):
    from uiqa_plugin.tools.score import main
    folder, good, bad = corpus
    assert main([os.path.join(str(folder), NON_UTF8), '--clip-model', tiny_clip_files['config'],
                 '--clip-pretrained', tiny_clip_files['openai'], '--device', 'cpu', '--no-progress']) == 0
    table = capsys.readouterr().out
    assert 'caf\\xe9.png' in table and float(table.splitlines()[1].split()[-1]) > 0


def test_profile_scores_tiny_images_and_names_strips(corpus, tiny_metric_factory):
    """uiqa-profile (and the report built on its rows) go through the same loader."""
    from uiqa_plugin.perception.profile import profile_images
    folder, good, bad = corpus
    paths = [str(folder / 'one_pixel.png'), str(folder / 'strip.png'), str(folder / 'good.png')]
    result = profile_images(tiny_metric_factory('look'), paths, batch_size=2, progress=False)
    assert [r['path'] for r in result.rows] == [paths[0], paths[2]] and len(result.rows[0]) == 1 + 5
    assert result.failures[0][0] == paths[1] and 'aspect ratio' in result.failures[0][1]
