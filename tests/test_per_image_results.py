"""Per-image results of test runs (results/<name>/<set>_metrics.csv) and prediction tables named by attribute
and target, with original-scale ratings; checked against values computed without BasicSR's metric code."""
import csv
import glob
import os.path as osp
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, SR_TEST_YML, demo_options, independent_sr_per_image, run, sr_options, write_yaml
from uiqa_plugin.metrics.per_image import per_image_metrics
from uiqa_plugin.models.prediction_table import output_column_names, prediction_table



def read_table(path):
    with open(path, newline='', encoding='utf-8') as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- prediction tables

def test_prediction_table_names_columns_and_gives_original_scale_ratings():
    from uiqa_plugin.data.base_iqa_dataset import TargetNormalizer
    normalizer = TargetNormalizer.from_options(target_range=[1, 5])
    preds = np.array([[0.25, 0.5], [0.75, 1.0]], np.float32)
    targets = normalizer.normalize([[2.0, 3.0], [4.0, 5.0]])
    header, rows = prediction_table(['a.jpg', 'b.jpg'], preds, ['quality', 'sharpness'], targets=targets,
                                    target_names=['MOS', 'sharp_MOS'], denormalize=normalizer.denormalize)
    assert header == ['key', 'pred_quality', 'pred_sharpness', 'pred_quality_original_scale',
                      'pred_sharpness_original_scale', 'target_MOS', 'target_sharp_MOS', 'target_MOS_original_scale',
                      'target_sharp_MOS_original_scale']
    assert rows[0] == ['a.jpg', '0.250000', '0.500000', '2.000000', '3.000000', '0.250000', '0.500000', '2.000000',
                       '3.000000']
    assert rows[1][-2:] == ['4.000000', '5.000000']  # the ratings as the annotation file writes them
    header, rows = prediction_table(['a.jpg'], preds[:1, :1], ['score'])
    assert header == ['key', 'pred_score'] and rows == [['a.jpg', '0.250000']]


def test_output_column_names():
    class Net:
        attribute_names = ['quality', 'sharpness']
    assert output_column_names(Net(), 2) == ['quality', 'sharpness']
    assert output_column_names(Net(), 1) == ['score']  # a regression head over both attributes
    assert output_column_names(object(), 3) == ['0', '1', '2']


# ----------------------------------------------------------------------------- SRModel in this process

def write_pairs(folder, sizes, seed=0):
    rng = np.random.RandomState(seed)
    for sub in ('GT', 'LQ'):
        (folder / sub).mkdir(parents=True)
    names = []
    for i, (h, w) in enumerate(sizes):
        gt = rng.randint(0, 256, (4 * h, 4 * w, 3)).astype(np.uint8)
        name = f'im{i}'
        Image.fromarray(gt).save(folder / 'GT' / f'{name}.png')
        Image.fromarray(gt).resize((w, h), Image.BICUBIC).save(folder / 'LQ' / f'{name}.png')
        names.append(name)
    return names


def sr_model_and_loader(folder, clip_metric):
    from basicsr.data.paired_image_dataset import PairedImageDataset
    from basicsr.models import build_model
    torch.manual_seed(0)
    opt = {'name': 'sr', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'is_train': False, 'dist': False,
           'rank': 0, 'world_size': 1,
           'network_g': {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 16, 'num_block': 2,
                         'upscale': 4},
           'path': {'pretrain_network_g': None, 'results_root': str(folder / 'results'),
                    'visualization': str(folder / 'results' / 'visualization')},
           'val': {'save_img': False, 'pbar': False, 'metrics': {
               'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': False},
               'clipiqa': dict(clip_metric, type='calculate_clipiqa', crop_border=4, better='higher')}}}
    model = build_model(opt)
    dataset = PairedImageDataset({'name': 'pairs', 'phase': 'val', 'scale': 4, 'dataroot_gt': str(folder / 'GT'),
                                  'dataroot_lq': str(folder / 'LQ'), 'filename_tmpl': '{}',
                                  'io_backend': {'type': 'disk'}})
    return model, torch.utils.data.DataLoader(dataset, batch_size=1, shuffle=False)


def test_sr_model_rows_are_the_per_image_psnr_and_clipiqa(tiny_metric_factory, tiny_clip_files, tmp_path):
    import basicsr.metrics
    import basicsr.models.sr_model as sr_model
    from uiqa_plugin.scoring.input_limits import minimum_input_side
    metric = tiny_metric_factory()
    side = minimum_input_side(metric.clip)
    # the second output is below CLIP's minimum side once cropped: upscaled as uiqa-score does
    names = write_pairs(tmp_path / 'pairs', [(14, 18), ((side - 1) // 4, 12), (12, 16)])
    clip = {'clip_model': tiny_clip_files['config'], 'clip_pretrained': tiny_clip_files['openai'], 'device': 'cpu'}
    model, loader = sr_model_and_loader(tmp_path / 'pairs', clip)
    folder = str(tmp_path / 'results')
    with per_image_metrics(model, loader, folder) as path:
        model.validation(loader, 'test', None, False)
    assert path == osp.join(folder, 'pairs_metrics.csv')
    # the model and BasicSR are as they were
    assert 'feed_data' not in vars(model) and sr_model.calculate_metric is basicsr.metrics.calculate_metric
    rows = read_table(path)
    assert sorted(r['name'] for r in rows) == names and list(rows[0]) == ['name', 'psnr', 'clipiqa']
    for row in rows:
        lq = np.asarray(Image.open(tmp_path / 'pairs' / 'LQ' / f'{row["name"]}.png'), np.float32) / 255.0
        gt = np.asarray(Image.open(tmp_path / 'pairs' / 'GT' / f'{row["name"]}.png'), np.float64)[4:-4, 4:-4]
        with torch.no_grad():
            sr = model.net_g(torch.from_numpy(lq).permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        sr = (sr * 255.0).round()[4:-4, 4:-4]  # BasicSR's 8-bit output, cropped
        assert float(row['psnr']) == pytest.approx(10 * np.log10(255.0**2 / np.mean((sr - gt)**2)), abs=1e-6)
        with torch.no_grad():
            expected = metric(torch.from_numpy(sr.astype(np.uint8)).permute(2, 0, 1)[None]).item()
        assert float(row['clipiqa']) == pytest.approx(expected, abs=1e-6)
    # the logged averages are the averages of the rows
    assert model.metric_results['psnr'] == pytest.approx(np.mean([float(r['psnr']) for r in rows]), abs=1e-9)
    assert model.metric_results['clipiqa'] == pytest.approx(np.mean([float(r['clipiqa']) for r in rows]), abs=1e-9)


def test_a_failed_validation_writes_nothing_and_restores(tiny_clip_files, tmp_path):
    import basicsr.metrics
    import basicsr.models.sr_model as sr_model
    write_pairs(tmp_path / 'pairs', [(14, 18)])
    model, loader = sr_model_and_loader(tmp_path / 'pairs', {'clip_model': tiny_clip_files['config'],
                                                             'clip_pretrained': tiny_clip_files['openai'],
                                                             'device': 'cpu', 'attributes': 'quality,sharpness'})
    with pytest.raises(ValueError, match='one val.metrics entry per attribute'):
        with per_image_metrics(model, loader, str(tmp_path / 'results')) as path:
            model.validation(loader, 'test', None, False)
    assert not osp.exists(path)
    assert 'feed_data' not in vars(model) and sr_model.calculate_metric is basicsr.metrics.calculate_metric


# ----------------------------------------------------------------------------- test.py, both kinds of model

@pytest.mark.slow
def test_test_py_writes_per_image_tables_for_sr_and_iqa_models(sr_data, demo_data, tmp_path):
    from basicsr.archs.srresnet_arch import MSRResNet
    torch.manual_seed(0)
    net_path = tmp_path / 'net_g.pth'
    torch.save({'params': MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4).state_dict()},
               net_path)
    opt = sr_options(SR_TEST_YML, sr_data, demo_data, **{'path.pretrain_network_g': str(net_path),
                                                         'val.save_img': False})
    run([sys.executable, osp.join(REPO, 'uiqa_plugin', 'test.py'), '-opt', write_yaml(tmp_path, opt, 'sr.yml')],
        tmp_path)
    rows = read_table(tmp_path / 'results' / opt['name'] / 'demo_sr_test_metrics.csv')
    expected = independent_sr_per_image(str(net_path), str(sr_data / 'test'), demo_data)
    assert sorted(r['name'] for r in rows) == sorted(expected)
    assert list(rows[0]) == ['name', 'clipiqa', 'clipiqa_y', 'psnr', 'psnr_y']  # val.metrics order (safe_dump sorts)
    for row in rows:
        # another process and thread count: the network's output may differ in its last bits
        for name in ('psnr', 'psnr_y'):
            assert float(row[name]) == pytest.approx(expected[row['name']][name], abs=1e-4), name
        for name in ('clipiqa', 'clipiqa_y'):
            assert float(row[name]) == pytest.approx(expected[row['name']][name], abs=2e-5), name

    # our IQAModel: zero-shot CLIP-IQA on the demo test split, scores of the files and the annotation's MOS
    import uiqa_plugin
    test_set = dict(demo_options(demo_data)['datasets']['val'], split='test', name='demo_test')
    clip = {'clip_model': osp.join(REPO, 'options/clip/tiny-rn.json'), 'clip_pretrained': str(demo_data / 'tiny.pt')}
    opt = {'name': 'zero_shot', 'model_type': 'IQAModel', 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'test': test_set}, 'val': {'metrics': {'srcc': {'type': 'calculate_srcc'}}},
           'network_g': {'type': 'CLIPIQA', 'attributes': 'quality', 'input_normalized': True, **clip}}
    run([sys.executable, osp.join(REPO, 'uiqa_plugin', 'test.py'), '-opt', write_yaml(tmp_path, opt, 'iqa.yml')],
        tmp_path)
    rows = read_table(tmp_path / 'results' / 'zero_shot' / 'demo_test_metrics.csv')
    assert list(rows[0]) == ['key', 'pred_quality', 'pred_quality_original_scale', 'target_MOS',
                             'target_MOS_original_scale']
    metric = uiqa_plugin.create_metric('quality', device='cpu', **clip)
    files = [osp.join(test_set['dataroot'], r['key']) for r in rows]
    scored = uiqa_plugin.score_paths(metric, files, workers=0, progress=False)
    assert [float(r['pred_quality']) for r in rows] == pytest.approx([s['quality'] for s in scored.rows], abs=2e-6)
    with open(test_set['meta_file'], newline='') as f:
        mos = {r['image_name']: float(r['MOS']) for r in csv.DictReader(f)}
    assert [float(r['target_MOS_original_scale']) for r in rows] == pytest.approx([mos[r['key']] for r in rows],
                                                                                  abs=1e-4)
    assert glob.glob(str(tmp_path / 'results' / 'zero_shot' / 'demo_test_predictions_*.csv'))


@pytest.mark.parametrize('rank', [0, 1])
def test_only_rank_0_keeps_the_gathered_predictions_and_writes_the_table(tiny_clip_files, tmp_path, rank):
    """Every rank gathers the whole set (a collective), but only rank 0 keeps it: the per-image table has one
    writer. Before, every rank kept it and every rank wrote <set>_metrics.csv at the same time."""
    from uiqa_plugin.models.iqa_model import IQAModel
    options = {'type': 'CLIPIQA', 'clip_model': tiny_clip_files['config'],
               'clip_pretrained': tiny_clip_files['openai']}
    opt = {'name': 't', 'model_type': 'IQAModel', 'num_gpu': 0, 'is_train': False, 'dist': False, 'rank': rank,
           'network_g': options, 'path': {'visualization': str(tmp_path / 'vis')}, 'datasets': {},
           'val': {'pbar': False, 'save_predictions': False}}
    model = IQAModel(opt)
    preds = torch.tensor([[0.25], [0.5], [0.75]])
    model.predict_loader = lambda loader, progress=True: (['a', 'b', 'c'], preds, preds.clone())
    loader = types.SimpleNamespace(dataset=types.SimpleNamespace(opt={'name': 'set'}))
    with per_image_metrics(model, loader, str(tmp_path / 'results')) as path:
        model.nondist_validation(loader, 0, None, False)
    assert osp.exists(path) == (rank == 0)
    if rank == 0:
        rows = read_table(path)
        assert [r['key'] for r in rows] == ['a', 'b', 'c'] and float(rows[2]['pred_quality']) == 0.75
