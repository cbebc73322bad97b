"""Every shipped option YAML validates; the demo ones run end to end; bad files fail clearly."""
import csv
import glob
import os.path as osp
import sys

import pytest
from scipy.stats import spearmanr

from helpers import REPO, TEST_PY, demo_options, last_metric, read_predictions, run, sr_options, train, write_yaml
from uiqa_plugin.options import OptionError, load_options, validate_options

REAL = sorted(glob.glob(osp.join(REPO, 'options', '*.yml')))
DEMO = sorted(glob.glob(osp.join(REPO, 'options', 'demo', '*.yml')))


def srcc_of_table(demo_data, table):
    """(SRCC by scipy of a predictions table against the MOS in the demo's meta file, number of rows)."""
    with open(demo_data / 'koniq10k_distributions_sets.csv', newline='') as f:
        mos = {row['image_name']: float(row['MOS']) for row in csv.DictReader(f)}
    preds = read_predictions(table)
    return spearmanr([preds[k] for k in preds], [mos[k] for k in preds]).statistic, len(preds)


def test_the_design_cards_recipe_ships():
    names = {osp.basename(p) for p in REAL}
    assert {'uiqa_koniq.yml', 'uiqa_koniq_charbonnier.yml', 'uiqa_koniq_adamw.yml', 'clipiqa_plus_koniq.yml',
            'test_clipiqa_koniq.yml'} <= names
    assert len(DEMO) >= 4


@pytest.mark.parametrize('path', REAL, ids=osp.basename)
def test_koniq_files_are_valid_but_for_the_data_users_download(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths must not find what the user's working folder holds
    is_train = not osp.basename(path).startswith('test_')
    with pytest.raises(OptionError) as info:
        load_options(path, is_train=is_train)
    problems = str(info.value).splitlines()[1:]
    # What is left to the user: the KonIQ download, and for evaluation the checkpoint of a training run.
    assert problems and all('path not found: datasets/koniq10k' in p or 'file not found: experiments/' in p
                            for p in problems), problems


@pytest.mark.slow  # the demo data and SR pairs are made by the shipped scripts, in subprocesses
@pytest.mark.parametrize('path', DEMO, ids=osp.basename)
def test_demo_files_validate_with_the_demo_data(path, demo_data, request, tmp_path, monkeypatch):
    # relative paths (experiments/...) must not find what the user's working folder holds, e.g. after the demo
    monkeypatch.chdir(tmp_path)
    if 'sr_msrresnet' in osp.basename(path):  # restoration recipes: SR pairs from scripts/make_sr_demo.py
        opt = sr_options(path, request.getfixturevalue('sr_data'), demo_data)
        opt['path']['pretrain_network_g'] = None  # the test recipe's network comes from the training recipe
    else:
        opt = demo_options(demo_data, yml=path)
    if 'network_g' not in opt:  # built from the checkpoint of the demo training, which this test does not run
        with pytest.raises(OptionError, match='pretrain_network_g: file not found: experiments/') as info:
            validate_options(opt, is_train=False, source=osp.basename(path))
        assert len(str(info.value).splitlines()) == 2, str(info.value)
        return
    validate_options(opt, is_train='train' in opt['datasets'], source=osp.basename(path))


@pytest.mark.slow
@pytest.mark.parametrize('name', ['clipiqa_plus_demo.yml', 'uiqa_demo_charbonnier_sgd.yml'])
def test_demo_training_recipes_run(name, demo_data, tmp_path):
    opt = demo_options(demo_data, yml=osp.join(REPO, 'options', 'demo', name),
                       **{'train.total_iter': 6, 'val.val_freq': 1000, 'logger.print_freq': 3,
                          'logger.save_checkpoint_freq': 1000})
    if 'periods' in opt['train']['scheduler']:
        opt['train']['scheduler']['periods'] = [3, 3]
    opt['val']['save_predictions'] = True
    log = train(write_yaml(tmp_path, opt), tmp_path)
    assert 'End of training' in log
    # the logged SRCC is that of the final validation's predictions (4 decimals logged, 6 in the table)
    table, = glob.glob(str(tmp_path / 'experiments' / opt['name'] / 'visualization' / '*_predictions_6.csv'))
    srcc, rows = srcc_of_table(demo_data, table)
    assert rows == 32 and last_metric(log, 'srcc') == pytest.approx(srcc, abs=1e-3)


@pytest.mark.slow
def test_zero_shot_demo_evaluation_runs(demo_data, tmp_path):
    opt = demo_options(demo_data, yml=osp.join(REPO, 'options', 'demo', 'clipiqa_demo_test.yml'))
    log = run([sys.executable, TEST_PY, '-opt', write_yaml(tmp_path, opt)], tmp_path)
    table, = glob.glob(osp.join(str(tmp_path), 'results', opt['name'], '*_predictions_*.csv'))
    srcc, rows = srcc_of_table(demo_data, table)
    assert rows == 32 and last_metric(log, 'srcc') == pytest.approx(srcc, abs=1e-3)  # the 32 test images


def test_validation_messages():
    good = {'name': 'x', 'model_type': 'IQAModel', 'datasets': {'test': {'type': 'ImageFolderDataset'}},
            'network_g': {'type': 'CLIPIQA', 'input_normalized': True}}  # the dataset normalizes (#8.5)
    validate_options(good, is_train=False)
    with pytest.raises(OptionError, match=r"network_g.type: unknown arch 'CLIPUQA' \(close: CLIPUIQA"):
        validate_options(dict(good, network_g={'type': 'CLIPUQA'}), is_train=False)
    with pytest.raises(OptionError, match=r'datasets.test.type: unknown dataset'):
        validate_options(dict(good, datasets={'test': {'type': 'KonIQDataset'}}), is_train=False)
    with pytest.raises(OptionError, match=r"datasets.test: ImageFolderDataset has no option 'recursve' "
                                          r"\(did you mean 'recursive'\?\)"):
        validate_options(dict(good, datasets={'test': {'type': 'ImageFolderDataset', 'recursve': True}}),
                         is_train=False)
    with pytest.raises(OptionError, match=r'train: required for training'):
        validate_options(good, is_train=True)
    with pytest.raises(OptionError, match=r'not valid YAML'):
        import tempfile
        with tempfile.NamedTemporaryFile('w', suffix='.yml', delete=False) as f:
            f.write('name: [unclosed\n')
        load_options(f.name)
