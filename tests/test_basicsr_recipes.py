"""BasicSR's own option files (copies of v1.4.2 recipes in tests/data/basicsr_options) pass our validation,
data paths aside; the two that BasicSR itself cannot build are caught; a BasicSR recipe trains through
uiqa_plugin/train.py with only its data paths, machine and length changed."""
import glob
import os.path as osp
import sys

import pytest
import yaml

from helpers import REPO, TRAIN_PY, logged, run, spawn, write_yaml
from uiqa_plugin.options import OptionError, validate_options

FOLDER = osp.join(REPO, 'tests', 'data', 'basicsr_options')
BROKEN = {  # recipes of BasicSR 1.4.2 that BasicSR itself fails to build
    'train_EDVR_L_x4_SR_REDS.yml': "network_g.ema_decay: EDVR has no option 'ema_decay'",
    'train_hifacegan.yml': "train.feature_matching_opt.type: unknown loss 'GANFeatLoss'",
}
RECIPES = sorted(glob.glob(osp.join(FOLDER, '*.yml')))


def load(path):
    with open(path) as f:
        opt = yaml.safe_load(f)
    return opt, isinstance(opt.get('train'), dict)


def test_the_families_are_represented():
    opts = {osp.basename(p): load(p)[0] for p in RECIPES}
    assert any('network_d' in o and 'net_d_iters' in o.get('train', {}) for o in opts.values())  # GAN
    assert any('fix_flow' in o.get('train', {}) for o in opts.values())  # video with flow
    assert any('second_blur_prob' in o for o in opts.values())  # Real-ESRGAN degradations
    assert any('suffix' in (o.get('val') or {}) for o in opts.values())
    assert {o['model_type'] for o in opts.values()} >= {'SRModel', 'ESRGANModel', 'VideoRecurrentModel',
                                                        'RealESRGANModel', 'SwinIRModel'}


@pytest.mark.parametrize('path', [p for p in RECIPES if osp.basename(p) not in BROKEN], ids=osp.basename)
def test_basicsr_recipe_is_valid_data_paths_aside(path):
    opt, is_train = load(path)
    validate_options(opt, is_train=is_train, source=osp.basename(path), check_environment=False)
    # on this machine the data (and the GPUs they ask for) are missing: said by key, nothing else
    with pytest.raises(OptionError) as info:
        validate_options(opt, is_train=is_train, source=osp.basename(path))
    problems = str(info.value).splitlines()[1:]
    assert problems and all('not found' in p or p.strip().startswith('- num_gpu:') for p in problems), problems


@pytest.mark.parametrize('name', sorted(BROKEN))
def test_recipes_basicsr_cannot_build_are_caught(name):
    opt, is_train = load(osp.join(FOLDER, name))
    with pytest.raises(OptionError) as info:
        validate_options(opt, is_train=is_train, source=name, check_environment=False)
    assert str(info.value).splitlines()[1:] == [f'  - {BROKEN[name]}' +
                                                ('' if 'ema_decay' in BROKEN[name] else ' (close: GANLoss)')]
    # ... and BasicSR itself fails on them, only later (at model construction)
    from basicsr.archs import build_network
    from basicsr.losses import build_loss
    with pytest.raises((TypeError, KeyError)):
        if 'ema_decay' in BROKEN[name]:
            build_network(dict(opt['network_g']))
        else:
            build_loss(dict(opt['train']['feature_matching_opt']))


def test_a_strict_check_still_applies_to_basicsr_models():
    opt, _ = load(osp.join(FOLDER, 'train_ESRGAN_x4.yml'))
    opt['network_d']['num_fea'] = 64
    opt['train']['gan_opt']['type'] = 'GANLos'
    opt['train']['optim_d']['type'] = 'SGD'
    opt['train']['optim_g']['lr'] = '1e-4'
    opt['val']['metrics']['srcc'] = {'type': 'calculate_srcc'}
    with pytest.raises(OptionError) as info:
        validate_options(opt, check_environment=False)
    text = str(info.value)
    assert "network_d.num_fea: VGGStyleDiscriminator has no option 'num_fea' (did you mean 'num_feat'?)" in text
    assert "train.gan_opt.type: unknown loss 'GANLos' (close: GANLoss" in text
    assert ("train.optim_d.type: optimizer 'SGD' is not supported by ESRGANModel (BasicSR 1.4.2 builds only Adam)"
            in text)
    assert "train.optim_g.lr: expected a number, got the string '1e-4'" in text and '1.0e-4' in text
    assert 'val.metrics.srcc.type: calculate_srcc is a dataset-level metric' in text and 'calculate_clipiqa' in text


@pytest.mark.slow
def test_a_basicsr_recipe_trains_through_our_train_py(sr_data, demo_data, tmp_path):
    """BasicSR's train_MSRResNet_x4.yml with the demo SR data, CPU, 2 iterations, and CLIP-IQA added."""
    opt, _ = load(osp.join(FOLDER, 'train_MSRResNet_x4.yml'))
    opt['num_gpu'] = 'auto'
    for phase, split in (('train', 'train'), ('val', 'val'), ('val_2', 'test')):
        ds = opt['datasets'][phase]
        ds['dataroot_gt'], ds['dataroot_lq'] = str(sr_data / split / 'GT'), str(sr_data / split / 'LQ')
        ds.pop('meta_info_file', None)
    train = opt['datasets']['train']
    train.update(num_worker_per_gpu=0, dataset_enlarge_ratio=1)
    opt['train']['total_iter'] = 2
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    opt['val']['metrics']['clipiqa'] = {'type': 'calculate_clipiqa', 'crop_border': 4, 'better': 'higher',
                                        'clip_model': osp.join(REPO, 'options/clip/tiny-rn.json'),
                                        'clip_pretrained': str(demo_data / 'tiny.pt')}
    # batch 16 from 8 training photos: drop_last would give 0 iterations -> refused, with the numbers
    out = spawn([sys.executable, TRAIN_PY, '-opt', write_yaml(tmp_path, opt, 'big_batch.yml')], tmp_path, timeout=600)
    assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr[-3000:]
    assert ("datasets.train.batch_size_per_gpu: 16, but training set 'DIV2K' has 8 samples" in out.stderr
            and 'a batch needs 16 samples' in out.stderr), out.stderr[-3000:]
    train['batch_size_per_gpu'] = 4
    opt['name'] = 'msrresnet_recipe'
    log = run([sys.executable, TRAIN_PY, '-opt', write_yaml(tmp_path, opt)], tmp_path)
    assert 'End of training' in log
    assert len(logged(log, 'psnr')) >= 2 and all(0 < v < 1 for v in logged(log, 'clipiqa'))  # Set5 and Set14 stand-ins
    assert osp.isfile(tmp_path / 'experiments' / 'msrresnet_recipe' / 'models' / 'net_g_2.pth')
