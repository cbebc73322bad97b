"""uiqa-profile end to end with a tiny random CLIP: profile, extra scorers, radar, report, evaluate, sensitivity."""
import csv
import json
import os
import re
import textwrap

import numpy as np
import pytest
import torch
from scipy import stats

import uiqa_plugin
from helpers import write_image
from tiny_clip import TINY_RN_CONFIG, write_config
from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
from uiqa_plugin.data.image_io import image_to_tensor, read_image
from uiqa_plugin.perception.ensembles import ENSEMBLE_PHRASINGS
from uiqa_plugin.perception.profile import ProfileScorer, profile_images
from uiqa_plugin.perception.score_tables import read_score_table
from uiqa_plugin.prompts import Attribute
from uiqa_plugin.tools.profile import main

N_IMAGES = 5


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli')
    folder = root / 'photos'
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(1, N_IMAGES + 1):
        arr = (rng.random((36, 44, 3)) * 255 * (0.2 + 0.15 * i)).clip(0, 255).astype(np.uint8)
        write_image(folder / f'{i:02d}.png', arr)
    config = write_config(root, 'tiny_cli', TINY_RN_CONFIG)
    return root, folder, config


def _clip(config):
    # CPU on every machine: the metrics of one CLIP share the backbone, and the checks below score on the CPU
    return ['--clip-model', config, '--clip-pretrained', 'none', '--no-progress', '--device', 'cpu']


def _images(folder):
    paths = sorted(str(p) for p in folder.iterdir())
    return paths, torch.stack([image_to_tensor(read_image(p)) for p in paths])


def _direct(config, attributes, images):
    with torch.no_grad():
        return CLIPIQA(attributes, clip_model=config, clip_pretrained=None).eval()(images).numpy()


def test_profile_table_matches_the_model(setup, tmp_path):
    root, folder, config = setup
    out = tmp_path / 'feel.csv'
    assert main(['profile', str(folder), '-a', 'feel,happy@ensemble', '--out', str(out)] + _clip(config)) == 0
    rows, names = read_score_table(str(out))
    assert names == ['aesthetic', 'happy', 'natural', 'new', 'scary', 'complex', 'happy@ensemble']
    paths, images = _images(folder)
    assert [r['path'] for r in rows] == paths
    expected = _direct(config, names, images)
    np.testing.assert_allclose([[r[n] for n in names] for r in rows], expected, atol=1e-5)


def test_profile_prints_and_writes_radar_charts(setup, tmp_path, capsys):
    root, folder, config = setup
    charts = tmp_path / 'charts'
    assert main(['profile', str(folder / '01.png'), '-a', 'look', '--radar-dir', str(charts)] + _clip(config)) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ['path', 'brightness', 'sharpness', 'noisiness', 'colorfulness', 'contrast']
    assert len(printed) == 2
    assert sorted(os.listdir(charts)) == ['01.png', '01.svg']


def test_extra_scorer_hook_with_a_plain_clipiqa(setup):
    root, folder, config = setup
    paths, images = _images(folder)
    feel = uiqa_plugin.create_metric('feel', clip_model=config, clip_pretrained=None, device='cpu')
    quality = CLIPIQA('quality', clip_model=config, clip_pretrained=None).eval()
    look = CLIPIQA('sharpness,contrast', clip_model=config, clip_pretrained=None).eval()
    result = profile_images(feel, str(folder), extra_scorers={'trained_quality': quality, 'look': look},
                            progress=False)
    assert result.attribute_names == feel.attribute_names + ['trained_quality', 'look/sharpness', 'look/contrast']
    got = np.array([[r[n] for n in result.attribute_names] for r in result.rows])
    np.testing.assert_allclose(got[:, 6], _direct(config, 'quality', images)[:, 0], atol=1e-5)
    np.testing.assert_allclose(got[:, 7:], _direct(config, 'sharpness,contrast', images), atol=1e-5)
    np.testing.assert_allclose(got[:, :6], _direct(config, 'feel', images), atol=1e-5)

    def wrong(images):  # two columns but no names
        return torch.zeros(images.shape[0], 2)
    with pytest.raises(ValueError, match="extra scorer 'bad' returned 2 columns"):
        ProfileScorer(feel, {'bad': wrong})(images)
    with pytest.raises(ValueError, match='clashes'):
        ProfileScorer(feel, {'happy': quality})


def test_scorer_factory_from_the_command_line(setup, tmp_path, monkeypatch):
    root, folder, config = setup
    module = tmp_path / 'my_scorers.py'
    module.write_text(textwrap.dedent(f'''
        from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
        def build(device=None):
            return CLIPIQA('quality', clip_model={config!r}, clip_pretrained=None).to(device or 'cpu')
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / 'p.json'
    assert main(['profile', str(folder), '-a', 'happy', '--scorer', 'q=my_scorers:build', '--out', str(out)]
                + _clip(config)) == 0
    rows = json.loads(out.read_text())
    paths, images = _images(folder)
    np.testing.assert_allclose([r['q'] for r in rows], _direct(config, 'quality', images)[:, 0], atol=1e-5)
    assert main(['profile', str(folder), '--scorer', 'q=my_scorers:nothing'] + _clip(config)) == 2
    assert main(['profile', str(folder), '--scorer', 'q'] + _clip(config)) == 2


def test_radar_overlay_and_tables(setup, tmp_path):
    root, folder, config = setup
    assert main(['radar', str(folder), '-a', 'feel', '--out-dir', str(tmp_path / 'o'), '--overlay', 'all',
                 '--format', 'svg'] + _clip(config)) == 0
    assert os.listdir(tmp_path / 'o') == ['all.svg']
    a, b = tmp_path / 'paper.csv', tmp_path / 'ens.csv'
    assert main(['profile', str(folder), '-a', 'happy,scary,new', '--out', str(a)] + _clip(config)) == 0
    with open(b, 'w', newline='') as f:  # the ensemble scores under the same column names
        rows = [dict(r) for r in csv.DictReader(open(a))]
        for r in rows:
            r['happy'] = '0.9'
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(['radar', '--table', str(a), '--table', str(b), '--label', 'paper', '--label', 'other',
                 '--out-dir', str(tmp_path / 'cmp'), '--format', 'png']) == 0
    assert sorted(os.listdir(tmp_path / 'cmp')) == [f'{i:02d}.png' for i in range(1, N_IMAGES + 1)]
    assert main(['radar', str(folder), '--table', str(a), '--out-dir', str(tmp_path / 'x')]) == 2


def test_report_command(setup, tmp_path):
    root, folder, config = setup
    page = tmp_path / 'r' / 'report.html'
    assert main(['report', str(folder), '-a', 'feel', '--out', str(page), '--images', 'link'] + _clip(config)) == 0
    text = page.read_text()
    link = os.path.relpath(folder / '01.png', page.parent)
    assert text.count('<tr>') == N_IMAGES + 1 and f'src="{link}"' in text and link.startswith('..')


def test_evaluate_command(setup, tmp_path, capsys):
    root, folder, config = setup
    ratings = tmp_path / 'ratings.csv'
    ratings.write_text('image number,happy,aesthetics\n1,0.1,0.9\n2,0.5,0.3\n3,0.2,0.2\n4,0.9,0.5\n5,0.7,0.6\n')
    out, chart = tmp_path / 'agree.json', tmp_path / 'agree.png'
    code = main(['evaluate', str(ratings), str(folder), '--map', 'aesthetics=aesthetic', '--prompt-set', 'both',
                 '--n-boot', '50', '--out', str(out), '--chart', str(chart)] + _clip(config))
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r['attribute'] for r in rows] == ['happy', 'happy@ensemble', 'aesthetic', 'aesthetic@ensemble']
    paths, images = _images(folder)
    happy = _direct(config, 'happy', images)[:, 0]
    assert rows[0]['srcc'] == pytest.approx(stats.spearmanr(happy, [0.1, 0.5, 0.2, 0.9, 0.7]).statistic, abs=1e-6)
    assert rows[0]['plcc_low'] <= rows[0]['plcc'] <= rows[0]['plcc_high']
    assert chart.exists() and 'srcc' in capsys.readouterr().out


@pytest.mark.parametrize('content, args, message', [
    ('image number,happy\n1,0.1\n2,x\n', [], "row 2 (line 3), column 'happy': 'x' is not a number"),
    ('image number,happy\n1,0.1\n9,0.3\n', ['--strict'], "rated image(s) not found"),
    ('image number,aesthetics\n1,0.1\n2,0.3\n', [], "column 'aesthetics' is not an attribute"),
    ('image number,happy\n1,0.1\n2,0.3\n', ['--map', 'joy=happy'], "no column 'joy'"),
    ('image number,happy\n1,0.1\n2,0.3\n', ['--image-column', 'file'], "no column 'file'"),
])
def test_evaluate_command_errors(setup, tmp_path, capsys, content, args, message):
    root, folder, config = setup
    ratings = tmp_path / 'bad ratings.csv'
    ratings.write_text(content)
    assert main(['evaluate', str(ratings), str(folder), '--n-boot', '0'] + args + _clip(config)) == 2
    err = capsys.readouterr().err
    assert 'uiqa-profile evaluate:' in err and 'bad ratings.csv' in err and message in err


def test_sensitivity_command(setup, tmp_path, capsys):
    root, folder, config = setup
    phr, summary, scores = tmp_path / 'phr.csv', tmp_path / 'sum.json', tmp_path / 'scores.csv'
    assert main(['sensitivity', str(folder), '-a', 'happy', '--out', str(phr), '--summary-out', str(summary),
                 '--scores-out', str(scores), '--matrix'] + _clip(config)) == 0
    printed = capsys.readouterr().out
    assert 'happy@ensemble' in printed and 'This photo feels joyful.' in printed
    assert 'SRCC between the phrasings of happy@ensemble' in printed
    paths, images = _images(folder)
    pairs = ENSEMBLE_PHRASINGS['happy']
    singles = _direct(config, [Attribute(f'h{k}', (p,)) for k, p in enumerate(pairs)], images)
    rows, _ = read_score_table(str(scores))
    table = np.array([[r[f'happy@ensemble[{k}]'] for k in range(4)] for r in rows])  # full precision
    np.testing.assert_allclose(table, singles, atol=1e-5)
    # Rank correlations from the command's own scores: a random CLIP scores the images within 1e-5 of each
    # other at times, where the independent model's last-bit differences may swap ranks.
    per_phrasing = list(csv.DictReader(open(phr)))
    assert [(r['positive'], r['negative']) for r in per_phrasing] == pairs
    for k, r in enumerate(per_phrasing):
        assert float(r['srcc_paper']) == pytest.approx(stats.spearmanr(table[:, k], table[:, 0]).statistic,
                                                       abs=1e-9)
        assert float(r['mean']) == pytest.approx(singles[:, k].mean(), abs=1e-6)
    summary_row, = json.loads(summary.read_text())
    pairwise = [stats.spearmanr(table[:, i], table[:, j]).statistic for i in range(4) for j in range(i + 1, 4)]
    assert summary_row['mean_srcc'] == pytest.approx(np.mean(pairwise), abs=1e-9)
    assert summary_row['min_srcc'] == pytest.approx(np.min(pairwise), abs=1e-9)


def test_phrasings_and_usage_errors(setup, capsys):
    root, folder, config = setup
    assert main(['phrasings', '-a', 'scary']) == 0
    out = capsys.readouterr().out
    assert "0: 'Scary photo.' / 'Peaceful photo.'   <- paper" in out and 'a creepy photo' in out
    assert main(['profile', str(folder), '-a', 'hapy'] + _clip(config)) == 2
    assert 'Did you mean happy' in capsys.readouterr().err
    assert main(['profile', str(root / 'nothing-here')] + _clip(config)) == 1


def test_radar_matches_paper_and_ensemble_tables(setup, tmp_path, capsys):
    # The README's comparison: one table from -a feel, one from -a feel@ensemble.
    root, folder, config = setup
    paper, ens = tmp_path / 'paper.csv', tmp_path / 'ensemble.csv'
    assert main(['profile', str(folder), '-a', 'happy,scary', '--out', str(paper)] + _clip(config)) == 0
    assert main(['profile', str(folder), '-a', 'happy@ensemble,scary@ensemble', '--out', str(ens)] + _clip(config)) == 0
    capsys.readouterr()
    assert main(['radar', '--table', str(paper), '--table', str(ens), '--out-dir', str(tmp_path / 'cmp'),
                 '--format', 'svg']) == 0
    err = capsys.readouterr().err
    assert 'matched by attribute: happy@ensemble as happy, scary@ensemble as scary' in err
    assert sorted(os.listdir(tmp_path / 'cmp')) == [f'{i:02d}.svg' for i in range(1, N_IMAGES + 1)]


def test_match_columns_by_attribute():
    from uiqa_plugin.perception.score_tables import match_columns
    assert match_columns([['happy', 'scary', 'new'], ['scary@ensemble', 'happy@ensemble', 'warm']]) == (
        ['happy', 'scary'], [['happy', 'scary'], ['happy@ensemble', 'scary@ensemble']])
    # an exact match wins; only the @ensemble suffix is dropped
    assert match_columns([['happy', 'happy@ensemble'], ['happy']]) == (['happy'], [['happy'], ['happy']])
    assert match_columns([['new'], ['new@x']]) == ([], [[], []])
    # a table with both happy and happy@ensemble cannot pair with a table holding only one of them
    assert match_columns([['happy', 'happy@ensemble'], ['happy@ensemble', 'x'], ['happy']]) == ([], [[], [], []])


def test_radar_tables_without_common_columns_say_what_they_hold(setup, tmp_path, capsys):
    root, folder, config = setup
    a, b = tmp_path / 'a.csv', tmp_path / 'b.csv'
    a.write_text('path,happy\nx.png,0.5\n')
    b.write_text('path,scary\nx.png,0.5\n')
    assert main(['radar', '--table', str(a), '--table', str(b), '--out-dir', str(tmp_path / 'o')]) == 2
    err = capsys.readouterr().err
    assert 'share no score column' in err and f'{a}: happy' in err and f'{b}: scary' in err


def test_os_errors_name_the_file_not_the_errno(setup, tmp_path, capsys):
    from uiqa_plugin.tools.profile import error_message
    assert error_message(PermissionError(13, 'Permission denied', '/data/out.csv')) == \
        '/data/out.csv: Permission denied'
    assert error_message(FileNotFoundError('annotation file not found: x.csv')) == 'annotation file not found: x.csv'
    from uiqa_plugin.prompts import UnknownAttributeError
    assert error_message(UnknownAttributeError("unknown attribute 'hapy'")) == "unknown attribute 'hapy'"
    root, folder, config = setup
    ratings = tmp_path / 'ratings.csv'
    ratings.write_text('image number,happy\n1,0.1\n2,0.5\n3,0.2\n')
    blocker = tmp_path / 'file'
    blocker.write_text('')
    out = blocker / 'agree.csv'  # its folder is a file: the system error carries errno 20
    code = main(['evaluate', str(ratings), str(folder), '--n-boot', '0', '--out', str(out)] + _clip(config))
    captured = capsys.readouterr()
    assert code == 2
    assert 'uiqa-profile evaluate:' in captured.err and str(blocker) in captured.err
    assert not re.search(r'evaluate: \d+\s*$', captured.err, re.M)


def test_evaluate_prints_the_table_before_writing_it(setup, tmp_path, capsys, monkeypatch):
    import uiqa_plugin.tools.profile as profile_tool
    root, folder, config = setup
    ratings = tmp_path / 'ratings.csv'
    ratings.write_text('image number,happy\n1,0.1\n2,0.5\n3,0.2\n')

    def failing_write(rows, columns, path):
        raise OSError(28, 'No space left on device', path)
    monkeypatch.setattr(profile_tool, 'write_table', failing_write)
    code = main(['evaluate', str(ratings), str(folder), '--n-boot', '0', '--out', str(tmp_path / 'a.csv')]
                + _clip(config))
    captured = capsys.readouterr()
    assert code == 2 and 'No space left on device' in captured.err
    assert 'srcc' in captured.out and 'happy' in captured.out  # the results were not lost


def test_prompts_with_commas(setup, tmp_path, capsys):
    root, folder, config = setup
    pair = 'A vivid, bright photo.|A dull photo.'
    assert main(['profile', str(folder), '-a', f'quality,{pair}'] + _clip(config)) == 2
    err = capsys.readouterr().err
    assert "unknown attribute 'A vivid'" in err and 'double quotes' in err
    out = tmp_path / 'vivid.csv'
    assert main(['profile', str(folder), '-a', f'quality,"{pair}"', '--out', str(out)] + _clip(config)) == 0
    rows, names = read_score_table(str(out))
    assert names == ['quality', pair] and len(rows) == N_IMAGES
    paths, images = _images(folder)
    np.testing.assert_allclose([r[pair] for r in rows],
                               _direct(config, [Attribute(pair, (tuple(pair.split('|')),))], images)[:, 0],
                               atol=1e-5)


def test_report_warns_about_random_weights(setup, tmp_path):
    root, folder, config = setup
    page = tmp_path / 'report.html'
    assert main(['report', str(folder), '-a', 'happy', '--out', str(page)] + _clip(config)) == 0
    text = page.read_text()
    assert '[MEANINGLESS SCORES]' in text and 'random weights' in text


def test_evaluate_skips_and_names_a_missing_image_and_reuses_a_scores_table(setup, tmp_path, capsys):
    root, folder, config = setup
    ratings = tmp_path / 'ratings.csv'
    ratings.write_text('image number,happy\n1,0.1\n2,0.5\n3,0.2\n77,0.9\n4,0.7\n')
    out = tmp_path / 'agree.csv'
    scores = tmp_path / 'scores.csv'
    code = main(['evaluate', str(ratings), str(folder), '--n-boot', '0', '--out', str(out),
                 '--scores-out', str(scores)] + _clip(config))
    err = capsys.readouterr().err
    assert code == 1 and "skipped row 4 (line 5) '77': image not found" in err
    paths, images = _images(folder)
    happy = _direct(config, 'happy', images[:4])[:, 0]
    rows = list(csv.DictReader(open(out)))
    assert rows[0]['n'] == '4'
    assert float(rows[0]['srcc']) == pytest.approx(stats.spearmanr(happy, [0.1, 0.5, 0.2, 0.7]).statistic, abs=1e-6)
    assert rows[0]['random_weights'] == '1'
    # the same agreement from the table, without a model (no CLIP options at all)
    again = tmp_path / 'again.csv'
    assert main(['evaluate', str(ratings), str(folder), '--n-boot', '0', '--scores', str(scores), '--out', str(again),
                 '--no-progress']) == 1
    err = capsys.readouterr().err
    assert 'random weights (the table says so)' in err and 'skipped row 4' in err
    assert list(csv.DictReader(open(again)))[0]['srcc'] == rows[0]['srcc']


def test_random_weights_travel_with_every_written_output(setup, tmp_path, capsys):
    root, folder, config = setup
    table = tmp_path / 'new' / 'feel.json'
    assert main(['profile', str(folder), '-a', 'happy', '--out', str(table)] + _clip(config)) == 0
    err = capsys.readouterr().err
    assert f'creating folder {tmp_path / "new"} for feel.json' in err  # said, not silent
    assert 'note: CLIP has random weights (--clip-pretrained none): these scores are meaningless.' in err
    assert 'UserWarning' not in err and 'warnings.warn' not in err
    assert all(row['random_weights'] in ('1', 1) for row in json.loads(table.read_text()))
    phr, summary, wide = tmp_path / 'phr.csv', tmp_path / 'sum.csv', tmp_path / 'wide.csv'
    assert main(['sensitivity', str(folder), '-a', 'happy', '--out', str(phr), '--summary-out', str(summary),
                 '--scores-out', str(wide)] + _clip(config)) == 0
    for path in (phr, summary, wide):
        assert all(row['random_weights'] in ('1', 1) for row in csv.DictReader(open(path))), path
    report = tmp_path / 'report.html'
    assert main(['report', '--table', str(table), '--out', str(report), '--no-progress']) == 0
    assert '[MEANINGLESS SCORES]' in report.read_text()


def test_radar_svgs_carry_the_random_weights_caption(setup, tmp_path):
    root, folder, config = setup
    charts = tmp_path / 'charts'
    assert main(['radar', str(folder / '01.png'), '-a', 'happy,scary,new', '--out-dir', str(charts),
                 '--format', 'svg'] + _clip(config)) == 0
    assert 'RANDOM WEIGHTS' in (charts / '01.svg').read_text()


def test_a_dollar_in_a_name_is_drawn_as_text(setup, tmp_path):
    root, folder, config = setup
    odd = tmp_path / 'odd'
    odd.mkdir()
    # '$...$' with an unknown command is a math parse error to matplotlib: it used to stop every chart
    (odd / 'price $5 $\\nope$.png').write_bytes((folder / '01.png').read_bytes())
    charts, report = tmp_path / 'charts', tmp_path / 'r.html'
    assert main(['radar', str(odd), '-a', '"Costs $\\nope$.|Costs $2."', '--out-dir', str(charts), '--format', 'svg']
                + _clip(config)) == 0
    assert main(['report', str(odd), '-a', 'happy', '--out', str(report)] + _clip(config)) == 0
    assert 'price $5 $\\nope$' in report.read_text()
    assert (charts / 'price $5 $\\nope$.svg').stat().st_size > 0


def test_a_large_embedded_report_suggests_linking_images(setup, tmp_path, capsys, monkeypatch):
    import uiqa_plugin.tools.profile as profile_tool
    root, folder, config = setup
    monkeypatch.setattr(profile_tool, 'LARGE_REPORT_BYTES', 1000)  # a real one: 5 MB, ~60 images at 80 KB
    out = tmp_path / 'r.html'
    assert main(['report', str(folder), '-a', 'happy', '--out', str(out)] + _clip(config)) == 0
    err = capsys.readouterr().err
    size = out.stat().st_size
    assert f'({N_IMAGES} images, {size / 2**20:.1f} MB)' in err
    assert f'({size / N_IMAGES / 1024:.0f} KB per image); --images link keeps it small' in err
    assert main(['report', str(folder), '-a', 'happy', '--out', str(out), '--images', 'link'] + _clip(config)) == 0
    assert '--images link keeps it small' not in capsys.readouterr().err


def _never_score(*args, **kwargs):
    raise AssertionError('nothing may be scored when an output cannot be written')


@pytest.mark.parametrize('command, option', [('profile', '--out'), ('sensitivity', '--out'),
                                             ('sensitivity', '--summary-out'), ('sensitivity', '--scores-out'),
                                             ('evaluate', '--out'), ('evaluate', '--scores-out')])
def test_table_outputs_are_checked_before_scoring(setup, tmp_path, capsys, monkeypatch, command, option):
    root, folder, config = setup
    monkeypatch.setattr('uiqa_plugin.api.create_metric', _never_score)
    monkeypatch.setattr('uiqa_plugin.perception.sensitivity.score_phrasings', _never_score)
    ratings = tmp_path / 'ratings.csv'
    ratings.write_text('image number,happy\n1,0.1\n2,0.5\n3,0.2\n')
    inputs = [str(ratings), str(folder)] if command == 'evaluate' else [str(folder), '-a', 'happy']
    for target, reason in (('x.txt', 'unknown table format .txt'), ('folder.csv', 'is a folder')):
        path = tmp_path / target
        (tmp_path / 'folder.csv').mkdir(exist_ok=True)
        assert main([command] + inputs + [option, str(path)] + _clip(config)) == 2
        err = capsys.readouterr().err
        assert f'uiqa-profile {command}: {path}: {reason}' in err, err
    assert not (tmp_path / 'x.txt').exists()


def test_evaluate_skips_an_unreadable_image_with_its_reason_unless_strict(setup, tmp_path, capsys):
    root, folder, config = setup
    photos = tmp_path / 'photos'
    photos.mkdir()
    for name in ('01.png', '02.png', '03.png'):
        (photos / name).write_bytes((folder / name).read_bytes())
    (photos / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n cut')
    ratings = tmp_path / 'ratings.csv'
    ratings.write_text('image,happy\n1,0.1\n2,0.5\nbroken,0.4\n3,0.2\ngone:1,0.9\n')
    out = tmp_path / 'agree.csv'
    code = main(['evaluate', str(ratings), str(photos), '--n-boot', '0', '--out', str(out)] + _clip(config))
    err = capsys.readouterr().err
    assert code == 1
    assert f"skipped row 3 (line 4) 'broken': {photos / 'broken.png'}: cannot decode image" in err, err
    assert "skipped row 5 (line 6) 'gone:1': image not found" in err, err  # a ':' in a name hides no reason
    paths, images = _images(folder)
    happy = _direct(config, 'happy', images[:3])[:, 0]
    row, = csv.DictReader(open(out))
    assert row['n'] == '3'
    assert float(row['srcc']) == pytest.approx(stats.spearmanr(happy, [0.1, 0.5, 0.2]).statistic, abs=1e-6)
    ratings.write_text('image,happy\n1,0.1\n2,0.5\nbroken,0.4\n3,0.2\n')
    code = main(['evaluate', str(ratings), str(photos), '--n-boot', '0', '--strict'] + _clip(config))
    err = capsys.readouterr().err
    assert code == 2 and f"uiqa-profile evaluate: {photos / 'broken.png'}: cannot decode image" in err, err
