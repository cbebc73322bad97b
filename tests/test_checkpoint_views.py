"""Checkpoints carry what evaluation needs: the network (test.py builds it from the checkpoint),
the preprocessing (uiqa-score rebuilds the exact views) and absolute CLIP paths (a missing one
is named with the flag that replaces it). Scoring a folder without ratings writes predictions."""
import csv
import glob
import os.path as osp
import shutil
import sys

import numpy as np
import pytest
import torch
import yaml

from helpers import REPO, TEST_PY, demo_options, read_predictions, run, train, write_yaml
from uiqa_plugin.data.demo import DEMO_IMAGE_FOLDER


@pytest.fixture(scope='module')
def trained(demo_data, tmp_path_factory):
    """A short run with a dataset-level resize and CLIP files named by RELATIVE paths."""
    cwd = tmp_path_factory.mktemp('views_run')
    shutil.copy(demo_data / 'tiny.pt', cwd / 'tiny.pt')
    shutil.copy(osp.join(REPO, 'options/clip/tiny-rn.json'), cwd / 'tiny-rn.json')
    opt = demo_options(demo_data, **{'train.total_iter': 4, 'val.val_freq': 1000, 'logger.print_freq': 2,
                                     'logger.save_checkpoint_freq': 1000, 'name': 'views', 'val.pbar': False})
    opt['network_g'].update(clip_model='tiny-rn.json', clip_pretrained='tiny.pt')
    opt['train']['ema_decay'] = 0.5  # validation and scoring use the average
    for phase in ('train', 'val'):
        opt['datasets'][phase].update(resize={'short_side': 96},
                                      views={'image': {}, 'fragments': {'grid': 2, 'patch': 16},
                                             'salient': {'size': 64}})
    opt['datasets']['train']['batch_size_per_gpu'] = 4
    opt['val']['save_predictions'] = True
    train(write_yaml(cwd, opt), cwd)
    exp = cwd / 'experiments' / 'views'
    predictions = read_predictions(glob.glob(str(exp / 'visualization' / '*_predictions_4.csv'))[0])
    return {'cwd': cwd, 'ckpt': str(exp / 'models' / 'net_g_latest.pth'), 'opt': opt, 'predictions': predictions}


@pytest.mark.slow  # a training or test.py run in a subprocess
def test_scoring_rebuilds_the_training_views_and_scores(trained, demo_data, monkeypatch, tmp_path):
    from uiqa_plugin.api import load_trained_model, score_paths, view_pipeline
    monkeypatch.chdir(tmp_path)  # another folder than the training's: CLIP paths are absolute in the checkpoint
    ckpt = torch.load(trained['ckpt'], weights_only=True)
    assert ckpt['network_g']['clip_pretrained'] == str(trained['cwd'] / 'tiny.pt')
    assert ckpt['preprocessing']['resize'] == {'short_side': 96}
    # The average differs from the last weights, and validation used it: the scores below match it.
    assert not torch.equal(ckpt['params']['prompt_learner.ctx'], ckpt['params_ema']['prompt_learner.ctx'])
    model = load_trained_model(trained['ckpt'], device='cpu')
    path = str(demo_data / DEMO_IMAGE_FOLDER / sorted(trained['predictions'])[0])
    views = view_pipeline(model)({'key': path, 'path': path, 'target': [], 'views': {}})
    # 256x192 demo images: shorter side 96 -> 128x96; the salient crop and fragments come from it.
    assert tuple(views['image'].shape) == (3, 96, 128)
    assert tuple(views['salient'].shape) == (3, 64, 64) and tuple(views['fragments'].shape) == (3, 32, 32)
    keys = sorted(trained['predictions'])[:6]
    result = score_paths(model, [str(demo_data / DEMO_IMAGE_FOLDER / k) for k in keys], progress=False)
    scored = {osp.basename(r['path']): r['score'] for r in result.rows}
    assert np.allclose([scored[k] for k in keys], [trained['predictions'][k] for k in keys], atol=1e-5)


@pytest.mark.slow  # a training or test.py run in a subprocess
def test_missing_clip_file_names_checkpoint_path_and_flag(trained, tmp_path):
    from uiqa_plugin.api import load_trained_model
    ckpt = torch.load(trained['ckpt'], weights_only=True)
    ckpt['network_g']['clip_pretrained'] = str(tmp_path / 'gone' / 'tiny.pt')
    moved = tmp_path / 'moved.pth'
    torch.save(ckpt, moved)
    with pytest.raises(ValueError, match=rf'{moved}: .*clip_pretrained {tmp_path}/gone/tiny.pt.*--clip-pretrained'):
        load_trained_model(str(moved), device='cpu')
    model = load_trained_model(str(moved), device='cpu', clip_pretrained=str(trained['cwd'] / 'tiny.pt'))
    assert model.views == ['image', 'fragments', 'salient']


def test_test_py_names_the_checkpoints_missing_clip_files(demo_data, tiny_clip_files, tmp_path, capsys):
    """A checkpoint from another machine names CLIP files that are not here: test.py says so, naming the
    checkpoint and how to point at the files, instead of blaming the option file for a key it does not have."""
    from uiqa_plugin.runner.command_line import check_options, parse_arguments
    gone = tmp_path / 'gone' / 'tiny.pt'
    ckpt = tmp_path / 'net_g.pth'
    torch.save({'params': {}, 'network_g': {'type': 'CLIPIQAPlus', 'clip_model': tiny_clip_files['config'],
                                            'clip_pretrained': str(gone)}}, ckpt)
    with open(osp.join(REPO, 'options', 'demo', 'test_uiqa_demo.yml')) as f:
        opt = yaml.safe_load(f)
    opt['datasets']['test'].update(dataroot=str(demo_data / DEMO_IMAGE_FOLDER),
                                   meta_file=str(demo_data / 'koniq10k_distributions_sets.csv'))
    opt['path']['pretrain_network_g'] = str(ckpt)
    with pytest.raises(SystemExit) as exit_info:
        check_options(parse_arguments(['-opt', write_yaml(tmp_path, opt, 'test.yml')], False), False)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f'{ckpt}: it was trained with CLIP files that are not here: clip_pretrained {gone}' in err, err
    assert 'network_g.clip_pretrained in the option file' in err


@pytest.mark.slow  # a training or test.py run in a subprocess
def test_test_py_builds_the_network_from_the_checkpoint(trained, demo_data, tmp_path):
    with open(osp.join(REPO, 'options', 'demo', 'test_uiqa_demo.yml')) as f:
        opt = yaml.safe_load(f)
    assert 'network_g' not in opt
    opt['datasets']['test'].update(dataroot=str(demo_data / DEMO_IMAGE_FOLDER), split='validation',
                                   meta_file=str(demo_data / 'koniq10k_distributions_sets.csv'),
                                   resize={'short_side': 96}, views=trained['opt']['datasets']['val']['views'])
    opt['path']['pretrain_network_g'] = trained['ckpt']
    log = run([sys.executable, TEST_PY, '-opt', write_yaml(tmp_path, opt, 'test.yml')], tmp_path)
    assert f"network_g from the checkpoint {trained['ckpt']}" in log
    preds = read_predictions(glob.glob(str(tmp_path / 'results' / opt['name'] / '*.csv'))[0])
    assert preds.keys() == trained['predictions'].keys()
    assert np.allclose([preds[k] for k in preds], [trained['predictions'][k] for k in preds], atol=1e-5)

    # A network_g that contradicts the checkpoint (here: other attributes) is replaced, with a warning.
    opt['network_g'] = dict(trained['opt']['network_g'], attributes='quality', clip_model='tiny-rn.json',
                            clip_pretrained=str(trained['cwd'] / 'tiny.pt'))
    opt['name'] = 'mismatch'
    log = run([sys.executable, TEST_PY, '-opt', write_yaml(tmp_path, opt, 'test2.yml')], trained['cwd'])
    assert "differs from the one stored in" in log and "['attributes']" in log
    again = read_predictions(glob.glob(str(trained['cwd'] / 'results' / 'mismatch' / '*.csv'))[0])
    assert np.allclose([again[k] for k in preds], [preds[k] for k in preds], atol=1e-6)


@pytest.mark.slow  # a training or test.py run in a subprocess
def test_image_folder_without_ratings_writes_predictions_and_no_metrics(demo_data, tmp_path):
    folder = tmp_path / 'photos'
    folder.mkdir()
    for name in sorted(p.name for p in (demo_data / DEMO_IMAGE_FOLDER).iterdir())[:3]:
        shutil.copy(demo_data / DEMO_IMAGE_FOLDER / name, folder / name)
    opt = {'name': 'folder', 'model_type': 'IQAModel', 'num_gpu': 0, 'manual_seed': 0,
           'datasets': {'test': {'name': 'photos', 'type': 'ImageFolderDataset', 'dataroot': str(folder),
                                 'views': ['image'], 'batch_size_per_gpu': 1}},
           'network_g': {'type': 'CLIPIQA', 'attributes': 'quality', 'input_normalized': True,
                         'clip_model': osp.join(REPO, 'options/clip/tiny-rn.json'),
                         'clip_pretrained': str(demo_data / 'tiny.pt')},
           'val': {'save_predictions': True}}
    log = run([sys.executable, TEST_PY, '-opt', write_yaml(tmp_path, opt)], tmp_path)
    assert 'Validation photos (3 images)' in log and '# srcc' not in log
    with open(glob.glob(str(tmp_path / 'results' / 'folder' / '*.csv'))[0], newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and list(rows[0])[:2] == ['key', 'pred_quality']
    assert not any(column.startswith('target') for column in rows[0])
    # the same scores as uiqa-score's path for these files (the same zero-shot model, full resolution)
    from uiqa_plugin.api import create_metric, score_paths
    metric = create_metric('quality', clip_model=opt['network_g']['clip_model'],
                           clip_pretrained=opt['network_g']['clip_pretrained'], device='cpu')
    expected = {osp.basename(r['path']): r['quality']
                for r in score_paths(metric, [str(folder)], progress=False).rows}
    assert {r['key']: pytest.approx(float(r['pred_quality']), abs=1e-5) for r in rows} == expected


@pytest.mark.slow  # the demo data is made by the shipped scripts, in subprocesses
def test_view_pipeline_rebuilds_an_explicit_transform_list_reading_from_disk(demo_data):
    from types import SimpleNamespace

    from uiqa_plugin.api import view_pipeline
    model = SimpleNamespace(views=['image'], preprocessing={'transforms': [
        {'type': 'LoadImage', 'io_backend': {'type': 'lmdb', 'db_paths': ['train.lmdb']}},
        {'type': 'Resize', 'size': [40, 50]}, {'type': 'Normalize', 'mean': None, 'std': None},
        {'type': 'Collect', 'keys': ['image']}]})
    path = str(sorted((demo_data / DEMO_IMAGE_FOLDER).iterdir())[0])
    out = view_pipeline(model)({'key': path, 'path': path, 'target': [], 'views': {}})
    assert tuple(out['image'].shape) == (3, 40, 50) and 0 <= float(out['image'].min()) <= float(out['image'].max()) <= 1
