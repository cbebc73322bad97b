"""Agreement with human ratings: reading ratings files, matching images, metrics against hand-computed values."""
import itertools

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

import uiqa_plugin
from helpers import write_image
from tiny_clip import TINY_RN_CONFIG, write_config
from uiqa_plugin.data.image_io import image_to_tensor, read_image
from uiqa_plugin.perception.agreement import agreement_table, differing_pairs, evaluate_ratings, plot_agreement
from uiqa_plugin.perception.ratings import RatingsError, match_images, read_ratings

STUDY_HEADER = 'image number,natural,happy,aesthetics,new,complex,scary\n'


def _write(path, text):
    path.write_text(text, encoding='utf-8')
    return str(path)


def _pairs_2afc(pred, target):
    """2AFC accuracy by brute force over all pairs: agreeing pairs + half of the pred ties, over differing pairs."""
    good = total = 0.0
    for i, j in itertools.combinations(range(len(pred)), 2):
        if target[i] == target[j]:
            continue
        total += 1
        if pred[i] == pred[j]:
            good += 0.5
        elif (pred[i] - pred[j]) * (target[i] - target[j]) > 0:
            good += 1
    return good / total


# ----------------------------------------------------------------------------- metrics


def test_2afc_by_hand():
    target = [1, 2, 2, 3]  # 5 pairs differ: (0,1) (0,2) (0,3) (1,3) (2,3)
    rows = agreement_table({'a': [0.1, 0.4, 0.35, 0.8], 'b': [0.1, 0.4, 0.35, 0.3], 'c': [0.3, 0.4, 0.35, 0.3]},
                           {'a': target, 'b': target, 'c': target}, n_boot=0)
    assert [r['pairs'] for r in rows] == [5, 5, 5]
    assert rows[0]['2afc'] == pytest.approx(1.0)
    assert rows[1]['2afc'] == pytest.approx(3 / 5)  # (1,3) and (2,3) reversed
    assert rows[2]['2afc'] == pytest.approx(2.5 / 5)  # (0,3) tied in pred counts half
    assert differing_pairs([0.5, 0.5, 0.5, 1.0]) == 3


def test_metrics_against_independent_computations():
    rng = np.random.default_rng(3)
    target = np.round(rng.random(30), 1)  # 0..1 in steps of 0.1, with ties, like the study
    pred = 0.6 * target + 0.4 * rng.random(30)
    row, = agreement_table({'happy': pred}, {'happy': target}, n_boot=0)
    xc, yc = pred - pred.mean(), target - target.mean()
    assert row['plcc'] == pytest.approx((xc @ yc) / np.sqrt((xc @ xc) * (yc @ yc)), abs=1e-12)
    assert row['srcc'] == pytest.approx(stats.spearmanr(pred, target).statistic, abs=1e-12)
    assert row['krcc'] == pytest.approx(stats.kendalltau(pred, target).statistic, abs=1e-12)
    assert row['2afc'] == pytest.approx(_pairs_2afc(pred, target), abs=1e-12)
    assert row['n'] == 30 and np.isnan(row['plcc_low'])


def test_intervals_contain_the_estimate_and_shrink_with_more_images():
    rng = np.random.default_rng(0)

    def widths(n):
        target = rng.random(n)
        pred = target + 0.5 * rng.standard_normal(n)
        row, = agreement_table({'x': pred}, {'x': target}, n_boot=300, seed=1)
        for key in ('plcc', 'srcc', 'krcc', '2afc'):
            assert row[f'{key}_low'] <= row[key] <= row[f'{key}_high'], key
        return {key: row[f'{key}_high'] - row[f'{key}_low'] for key in ('plcc', 'srcc', 'krcc', '2afc')}

    small, large = widths(20), widths(400)
    for key in small:
        assert large[key] < 0.6 * small[key], key


def test_bar_chart(tmp_path):
    rows = agreement_table({'a': [0.1, 0.5, 0.3, 0.9], 'b': [0.9, 0.5, 0.3, 0.1]},
                           {'a': [0, 1, 2, 3], 'b': [0, 1, 2, 3]}, n_boot=50)
    fig = plot_agreement(rows, str(tmp_path / 'bars.png'))
    top, bottom = fig.axes
    heights = [p.get_height() for p in top.patches]  # PLCC a, b, then SRCC a, b, then KRCC a, b
    assert heights[2:4] == pytest.approx([rows[0]['srcc'], rows[1]['srcc']])
    assert [p.get_height() for p in bottom.patches] == pytest.approx([rows[0]['2afc'], rows[1]['2afc']])
    with Image.open(tmp_path / 'bars.png') as im:
        assert im.format == 'PNG'


# ----------------------------------------------------------------------------- ratings files


def test_read_the_study_format(tmp_path):
    path = _write(tmp_path / 'r.csv', STUDY_HEADER + '1,0.5,0.2,0.9,0.1,0.3,0.0\n\n2,0.6,0.4,0.8,0.2,0.3,1.0\n')
    ratings = read_ratings(path, column_map={'aesthetics': 'aesthetic'})
    assert ratings.image_column == 'image number' and ratings.images == ['1', '2'] and ratings.lines == [2, 4]
    assert ratings.attribute_names == ['natural', 'happy', 'aesthetic', 'new', 'complex', 'scary']
    np.testing.assert_array_equal(ratings.values['aesthetic'], [0.9, 0.8])
    assert ratings.sources['aesthetic'] == 'aesthetics'
    semi = read_ratings(_write(tmp_path / 's.csv', '\ufefffile;Happy\na.jpg;7\nb.jpg;3\n'), columns=['happy'])
    assert semi.image_column == 'file' and semi.values == {'Happy': pytest.approx([7.0, 3.0])}


@pytest.mark.parametrize('text, kwargs, message', [
    (STUDY_HEADER + '1,0.5,0.2,abc,0.1,0.3,0.0\n', {}, r"row 1 \(line 2\), column 'aesthetics': 'abc' is not a number"),
    (STUDY_HEADER + '1,0.5,0.2,0.9,0.1,0.3,0.0\n2,0.5,,0.9,0.1,0.3,0.0\n', {},
     r"row 2 \(line 3\), column 'happy': empty"),
    (STUDY_HEADER + '1,0.5,0.2,0.9,0.1,0.3\n', {}, r'row 1 \(line 2\) has 6 cells, the header has 7'),
    (STUDY_HEADER + '1,0.5,0.2,0.9,0.1,0.3,0\n1,0.5,0.2,0.9,0.1,0.3,0\n', {}, r"image '1' was already rated in row 1"),
    (STUDY_HEADER + '1,0.5,0.2,0.9,0.1,0.3,0\n', {'column_map': {'aesthetic': 'aesthetic'}},
     r"no column 'aesthetic' \(named in the column map"),
    (STUDY_HEADER + '1,0.5,0.2,0.9,0.1,0.3,0\n', {'image_column': 'img'}, r"no column 'img' \(the image column\)"),
    (STUDY_HEADER + '1,0.5,0.2,0.9,0.1,0.3,nan\n', {}, r"column 'scary': 'nan' is not a number"),
    (STUDY_HEADER, {}, 'no ratings rows'),
    ('', {}, 'empty'),
])
def test_bad_ratings_files_name_the_problem(tmp_path, text, kwargs, message):
    path = _write(tmp_path / 'bad.csv', text)
    with pytest.raises(RatingsError, match=message) as info:
        read_ratings(path, **kwargs)
    assert 'bad.csv' in str(info.value)


def test_matching_images_by_number_name_and_path(tmp_path):
    folder = tmp_path / 'imgs'
    (folder / 'sub').mkdir(parents=True)
    for name in ['007.png', 'b.jpg', 'sub/c.png']:
        Image.new('RGB', (8, 8)).save(folder / name)
    ratings = read_ratings(_write(tmp_path / 'r.csv', 'name,happy\n7,1\nb.jpg,2\nsub/c.png,3\n'))
    expected = [str(folder / '007.png'), str(folder / 'b.jpg'), str(folder / 'sub' / 'c.png')]
    assert match_images(ratings, str(folder)) == expected
    missing = read_ratings(_write(tmp_path / 'm.csv', 'name,happy\n7,1\n8,2\nzzz,1\n'))
    message = r"2 rated image\(s\) not found .*row 2 \(line 3\) '8'; row 3 \(line 4\) 'zzz'"
    with pytest.raises(RatingsError, match=message):
        match_images(missing, str(folder))
    Image.new('RGB', (8, 8)).save(folder / 'b.png')
    both = read_ratings(_write(tmp_path / 'a.csv', 'name,happy\nb,1\n'))
    with pytest.raises(RatingsError, match="'b' matches"):
        match_images(both, str(folder))


# ----------------------------------------------------------------------------- end to end with a tiny CLIP


def test_evaluate_ratings_with_a_tiny_clip(tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    rng = np.random.default_rng(5)
    lines = [STUDY_HEADER]
    for i in range(1, 9):
        write_image(folder / f'{i:03d}.png', (rng.random((32, 40, 3)) * 255 * i / 8).astype(np.uint8))
        lines.append(f'{i},' + ','.join(f'{v:.1f}' for v in rng.integers(0, 11, 6) / 10) + '\n')
    ratings = read_ratings(_write(tmp_path / 'study.csv', ''.join(lines)), column_map={'aesthetics': 'aesthetic'})
    metric = uiqa_plugin.create_metric('natural,happy,aesthetic,new,complex,scary,happy@ensemble',
                                       clip_model=write_config(tmp_path, 'tiny_eval', TINY_RN_CONFIG),
                                       clip_pretrained=None, device='cpu')
    rows, scores, skipped = evaluate_ratings(metric, ratings, str(folder), n_boot=100, progress=False)
    assert skipped == []
    assert [r['attribute'] for r in rows] == metric.attribute_names
    assert rows[-1]['column'] == 'happy' and rows[2]['column'] == 'aesthetics'
    with torch.no_grad():
        direct = metric(torch.stack([image_to_tensor(read_image(folder / f'{i:03d}.png')) for i in range(1, 9)]))
    np.testing.assert_allclose([s['happy'] for s in scores], direct[:, 1].numpy(), atol=1e-6)
    happy = next(r for r in rows if r['attribute'] == 'happy')
    scored = [s['happy'] for s in scores]  # ranks from the scores used: near-ties may swap in the last bit
    assert happy['srcc'] == pytest.approx(stats.spearmanr(scored, ratings.values['happy']).statistic, abs=1e-9)
    assert happy['2afc'] == pytest.approx(_pairs_2afc(np.array(scored), ratings.values['happy']), abs=1e-9)
    partial = read_ratings(_write(tmp_path / 'more.csv', 'image,cosiness\n1,0.5\n2,0.1\n'))
    with pytest.raises(RatingsError, match='does not score the rated attribute.s. cosiness'):
        evaluate_ratings(metric, partial, str(folder), progress=False)


def test_agreement_chart_caption_and_plain_text_names(tmp_path):
    rows = [{'attribute': 'cost $\\nope$', 'plcc': 0.5, 'srcc': 0.4, 'krcc': 0.3, '2afc': 0.6},
            {'attribute': 'happy', 'plcc': 0.1, 'srcc': 0.2, 'krcc': 0.1, '2afc': 0.55}]
    path = tmp_path / 'agree.svg'
    figure = plot_agreement(rows, str(path), title='Agreement with $\\nope$.csv', caption='RANDOM WEIGHTS')
    assert path.stat().st_size > 0
    assert [t.get_text() for t in figure.texts][-1] == 'RANDOM WEIGHTS'
    assert 'RANDOM WEIGHTS' in path.read_text()
