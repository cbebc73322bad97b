"""The restoration recipe: a tiny MSRResNet (BasicSR's SRModel) trains on the demo photos with PSNR and
CLIP-IQA in its validation; the test.py recipe scores its outputs; the logged values are the real ones."""
import glob
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import REPO, TEST_PY, TRAIN_PY, logged, run, sr_options, write_yaml

pytestmark = pytest.mark.slow  # SR trainings and evaluations in subprocesses

SR_YML = osp.join(REPO, 'options', 'demo', 'sr_msrresnet_demo.yml')
SR_TEST_YML = osp.join(REPO, 'options', 'demo', 'test_sr_msrresnet_demo.yml')


def read_rgb(path):
    return np.asarray(Image.open(path).convert('RGB'), dtype=np.float64) / 255.0


def luma(rgb255):
    """ITU-R BT.601 Y of 8-bit RGB values, in [16, 235], as BasicSR's to_y_channel."""
    r, g, b = (rgb255[..., i] / 255.0 for i in range(3))
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def independent_scores(net_path, folder, demo_data):
    """{psnr, clipiqa, psnr_y, clipiqa_y}: means over the network's SR outputs, computed without BasicSR's
    metric code (the *_y on the BT.601 luma, CLIP seeing it replicated to RGB)."""
    from basicsr.archs.srresnet_arch import MSRResNet
    from uiqa_plugin.api import create_metric
    net = MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4)
    net.load_state_dict(torch.load(net_path, map_location='cpu', weights_only=True)['params'])
    net.eval()
    metric = create_metric('quality', clip_model=osp.join(REPO, 'options/clip/tiny-rn.json'),
                           clip_pretrained=str(demo_data / 'tiny.pt'), device='cpu')
    scores = {'psnr': [], 'clipiqa': [], 'psnr_y': [], 'clipiqa_y': []}

    def clipiqa(rgb01):
        with torch.no_grad():
            return metric(torch.from_numpy(rgb01.astype(np.float32)).permute(2, 0, 1)[None]).item()

    for lq_path in sorted(glob.glob(osp.join(folder, 'LQ', '*.png'))):
        lq = torch.from_numpy(read_rgb(lq_path).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            sr = net(lq).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        sr = (sr * 255.0).round()[4:-4, 4:-4]  # 8-bit output, crop_border 4
        gt = (read_rgb(lq_path.replace('LQ', 'GT')) * 255.0).round()[4:-4, 4:-4]
        scores['psnr'].append(10 * np.log10(255.0**2 / np.mean((sr - gt)**2)))
        scores['clipiqa'].append(clipiqa(sr / 255.0))
        scores['psnr_y'].append(10 * np.log10(255.0**2 / np.mean((luma(sr) - luma(gt))**2)))
        scores['clipiqa_y'].append(clipiqa(np.repeat(luma(sr)[..., None] / 255.0, 3, axis=2)))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def test_tiny_sr_recipe_logs_psnr_and_clipiqa(sr_data, demo_data, tmp_path):
    opt = sr_options(SR_YML, sr_data, demo_data, **{'train.total_iter': 20, 'val.val_freq': 10,
                                                    'logger.print_freq': 10, 'logger.save_checkpoint_freq': 10})
    opt['train']['scheduler']['periods'] = [20]
    log = run([sys.executable, TRAIN_PY, '-opt', write_yaml(tmp_path, opt)], tmp_path)
    psnr, clipiqa = logged(log, 'psnr'), logged(log, 'clipiqa')
    assert len(psnr) >= 2 and len(clipiqa) == len(psnr), log[-3000:]  # validated at 10 and 20 (and at the end)
    # the validations ran net_g_10 first and net_g_latest last: recompute both averages independently
    models = tmp_path / 'experiments' / opt['name'] / 'models'
    latest = models / 'net_g_latest.pth'
    for checkpoint, index in ((models / 'net_g_10.pth', 0), (latest, -1)):
        expected = independent_scores(str(checkpoint), str(sr_data / 'val'), demo_data)
        assert psnr[index] == pytest.approx(expected['psnr'], abs=2e-3), checkpoint
        assert clipiqa[index] == pytest.approx(expected['clipiqa'], abs=2e-4), checkpoint

    # the test.py recipe scores the outputs of that network with both metrics, and saves them without val.suffix
    test_opt = sr_options(SR_TEST_YML, sr_data, demo_data)
    test_opt['path']['pretrain_network_g'] = str(latest)
    assert 'suffix' not in test_opt['val'] and test_opt['val']['save_img']
    log = run([sys.executable, TEST_PY, '-opt', write_yaml(tmp_path, test_opt, 'test.yml')], tmp_path)
    expected = independent_scores(str(latest), str(sr_data / 'test'), demo_data)
    for name in ('psnr', 'psnr_y'):
        assert logged(log, name)[-1] == pytest.approx(expected[name], abs=2e-3), name
    for name in ('clipiqa', 'clipiqa_y'):
        assert logged(log, name)[-1] == pytest.approx(expected[name], abs=2e-4), name
    saved = sorted(osp.basename(p) for p in glob.glob(str(tmp_path / 'results' / test_opt['name'] / 'visualization' /
                                                          '*' / '*.png')))
    names = sorted(osp.basename(p)[:-4] for p in glob.glob(str(sr_data / 'test' / 'LQ' / '*.png')))
    assert saved == [f'{n}_{test_opt["name"]}.png' for n in names]


def test_own_basicsr_script_needs_one_line(sr_data, demo_data, tmp_path):
    """A user's own BasicSR entry point sees our metrics after `import uiqa_plugin.runner; patch_basicsr()`."""
    script = tmp_path / 'my_train.py'
    script.write_text('import os\n'
                      'import uiqa_plugin.runner; uiqa_plugin.runner.patch_basicsr()  # the one line\n'
                      'from basicsr.train import train_pipeline\n'
                      'if __name__ == "__main__":\n'
                      '    train_pipeline(os.getcwd())\n')
    opt = sr_options(SR_YML, sr_data, demo_data, **{'train.total_iter': 4, 'val.val_freq': 4, 'logger.print_freq': 2,
                                                    'logger.save_checkpoint_freq': 4, 'name': 'own_script'})
    opt['train']['scheduler']['periods'] = [4]
    log = run([sys.executable, str(script), '-opt', write_yaml(tmp_path, opt)], tmp_path)
    expected = independent_scores(str(tmp_path / 'experiments' / 'own_script' / 'models' / 'net_g_latest.pth'),
                                  str(sr_data / 'val'), demo_data)
    assert logged(log, 'clipiqa')[-1] == pytest.approx(expected['clipiqa'], abs=2e-4)
