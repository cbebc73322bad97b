"""HTML report: every image and score on one self-contained page, rendered by headless Chromium when present."""
import base64
import html
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import torch
from PIL import Image

import uiqa_plugin
from helpers import write_image
from tiny_clip import TINY_RN_CONFIG, write_config
from uiqa_plugin.checkpoint_io import save_checkpoint
from uiqa_plugin.perception.profile import profile_images, random_weights_reason
from uiqa_plugin.perception.report import write_report

CHROMIUM = next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)
# .ci/run installs Chromium and sets UIQA_REQUIRE_CHROMIUM=1: there a missing browser fails, not skips.
needs_chromium = pytest.mark.skipif(CHROMIUM is None and os.environ.get('UIQA_REQUIRE_CHROMIUM') != '1',
                                    reason='headless Chromium not installed (Debian: apt-get install -y chromium); '
                                    'the HTML is still checked as text')


@pytest.fixture(scope='module')
def scored(tmp_path_factory):
    root = tmp_path_factory.mktemp('report')
    folder = root / 'photos'
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i, name in enumerate(['beach.png', 'forest & lake.png', 'night.jpg', 'city.png']):
        arr = (rng.random((40 + 8 * i, 56, 3)) * 255 * (0.3 + 0.2 * i)).clip(0, 255).astype(np.uint8)
        write_image(folder / name, arr)
    metric = uiqa_plugin.create_metric('feel,Vivid photo.|Faded photo.',
                                       clip_model=write_config(root, 'tiny_report', TINY_RN_CONFIG),
                                       clip_pretrained=None, device='cpu')
    result = profile_images(metric, [str(folder)], progress=False)
    assert len(result.rows) == 4 and not result.failures
    return root, result, metric


def _render(url, *extra):
    with tempfile.TemporaryDirectory() as profile:
        cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
               '--disable-background-networking', '--disable-component-update', '--disable-sync',
               f'--user-data-dir={profile}', *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_holds_every_image_and_score_and_no_network(scored):
    root, result, metric = scored
    page = write_report(result.rows, result.attribute_names, str(root / 'out' / 'report.html'),
                        attributes=metric.attributes, progress=False)
    text = open(page, encoding='utf-8').read()
    for row in result.rows:
        assert html.escape(os.path.basename(row['path'])) in text
        for name in result.attribute_names:
            assert f'>{row[name]:.4f}</td>' in text
    assert html.escape('Vivid photo.|Faded photo.') in text and '“Happy photo.” vs “Sad photo.”' in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # self-contained
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', text)
    assert len(thumbs) == 2 * len(result.rows)  # table + card
    charts = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', text)
    assert len(charts) == len(result.rows)
    assert base64.b64decode(charts[0]).lstrip().startswith(b'<?xml')


def test_linked_images_are_relative_to_the_page(scored):
    root, result, _ = scored
    page = write_report(result.rows, result.attribute_names, str(root / 'linked' / 'r.html'), images='link',
                        chart_format='png', progress=False)
    text = open(page, encoding='utf-8').read()
    assert 'src="../photos/forest%20%26%20lake.png"' in text
    assert 'data:image/jpeg' not in text and text.count('data:image/png;base64,') == len(result.rows)


def test_report_rejects_rows_without_the_columns(tmp_path):
    with pytest.raises(ValueError, match=r'row 1 \(a.png\) lacks happy'):
        write_report([{'path': 'a.png'}], ['happy'], str(tmp_path / 'r.html'), progress=False)
    with pytest.raises(ValueError, match="'embed' or 'link'"):
        write_report([], ['happy'], str(tmp_path / 'r.html'), images='inline')


def test_random_weights_banner(scored, tmp_path):
    root, result, _ = scored
    quiet = write_report(result.rows, result.attribute_names, str(tmp_path / 'plain.html'), progress=False)
    assert 'class="warning"' not in open(quiet, encoding='utf-8').read()
    reason = random_weights_reason(None)
    assert 'random weights' in reason and 'meaningless' in reason
    page = write_report(result.rows, result.attribute_names, str(tmp_path / 'r.html'), progress=False,
                        warning=reason)
    text = open(page, encoding='utf-8').read()
    # in the page title and in a banner right under the heading, before the score table
    assert re.search(r'<title>\[MEANINGLESS SCORES\] ', text)
    banner = text.index('<div class="warning" role="alert"')
    assert text.index('</h1>') < banner < text.index('<table') and html.escape(reason) in text[banner:]


def test_random_weight_files_are_recognised(tmp_path):
    weights = {'w': torch.zeros(2)}
    save_checkpoint({'state_dict': weights, 'random_weights': True}, str(tmp_path / 'tiny.pt'))
    save_checkpoint({'state_dict': weights}, str(tmp_path / 'real.pt'))
    assert 'tiny.pt are random' in random_weights_reason(str(tmp_path / 'tiny.pt'))
    assert random_weights_reason(str(tmp_path / 'real.pt')) is None
    assert random_weights_reason('openai') is None and random_weights_reason('none') is not None
    (tmp_path / 'junk.pt').write_text('not a checkpoint')
    assert random_weights_reason(str(tmp_path / 'junk.pt')) is None  # loading it reports the problem, not this


@needs_chromium
@pytest.mark.slow  # starts the browser three times
def test_report_renders_and_sorts_in_headless_chromium(scored, tmp_path):
    assert CHROMIUM, 'UIQA_REQUIRE_CHROMIUM=1 but no chromium, chromium-browser or google-chrome on PATH'
    root, result, metric = scored
    page = write_report(result.rows, result.attribute_names, str(root / 'chromium' / 'report.html'),
                        attributes=metric.attributes, progress=False)
    shot = tmp_path / 'shot.png'
    run = _render(f'file://{page}', f'--screenshot={shot}', '--window-size=1200,900')
    assert shot.exists(), run.stderr[-2000:]
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert('RGB'), dtype=np.float32)
    assert pixels.shape[:2] == (900, 1200)
    assert pixels.std() > 10 and (pixels.mean(axis=2) < 100).mean() > 0.005  # text and pictures drawn

    # the inline script sorts: open the page sorted by 'happy' both ways and read the DOM back
    by_happy = [os.path.basename(r['path']) for r in sorted(result.rows, key=lambda r: r['happy'])]
    assert len({r['happy'] for r in result.rows}) == len(result.rows)
    for suffix, expected in (('', by_happy), ('&desc', by_happy[::-1])):
        run = _render(f'file://{page}#sort=happy{suffix}', '--dump-dom')
        names = re.findall(r'<td class="name" data-v="([^"]+)"', run.stdout)
        assert [html.unescape(n) for n in names] == expected, run.stderr[-2000:]


def test_the_page_is_written_through_a_unique_temporary_file(scored, tmp_path):
    """A fixed temporary name (report.html.tmp) collided with whatever held that name (another run's page
    in progress, a folder): the page goes through a unique temporary file and leaves none behind."""
    _, result, _ = scored
    out = tmp_path / 'report.html'
    (tmp_path / 'report.html.tmp').mkdir()  # the old fixed name, taken
    page = write_report(result.rows, result.attribute_names, str(out), images='link', progress=False)
    assert page == str(out) and '<table' in out.read_text(encoding='utf-8')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['report.html', 'report.html.tmp']
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # as any file the user creates


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
