"""The restoration recipe: a tiny MSRResNet (BasicSR's SRModel) trains on the demo photos with PSNR and
CLIP-IQA in its validation; the test.py recipe scores its outputs; the logged values are the real ones."""
import glob
import os.path as osp
import re
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from test_training import REPO, run, set_dotted, write_yaml

SR_YML = osp.join(REPO, 'options', 'demo', 'sr_msrresnet_demo.yml')
SR_TEST_YML = osp.join(REPO, 'options', 'demo', 'test_sr_msrresnet_demo.yml')


def sr_options(yml, sr_data, demo_data, **changes):
    """The shipped recipe with its data and CLIP paths pointed at the test's copies."""
    with open(yml) as f:
        opt = yaml.safe_load(f)
    for ds in opt['datasets'].values():
        for key in ('dataroot_gt', 'dataroot_lq'):
            ds[key] = ds[key].replace('datasets/demo_sr', str(sr_data))
    for metric in opt['val']['metrics'].values():
        if 'clip_model' in metric:
            metric['clip_model'] = osp.join(REPO, metric['clip_model'])
            metric['clip_pretrained'] = str(demo_data / 'tiny.pt')
    return set_dotted(opt, changes)


def logged(log, name):
    return [float(v) for v in re.findall(rf'# {name}: (-?[0-9.]+|inf|nan)', log)]


def read_rgb(path):
    return np.asarray(Image.open(path).convert('RGB'), dtype=np.float64) / 255.0


def independent_scores(net_path, folder, demo_data):
    """PSNR and CLIP-IQA of the network's SR outputs, computed without BasicSR's metric code."""
    from basicsr.archs.srresnet_arch import MSRResNet
    from uiqa_plugin.api import create_metric
    net = MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4)
    net.load_state_dict(torch.load(net_path, map_location='cpu', weights_only=True)['params'])
    net.eval()
    metric = create_metric('quality', clip_model=osp.join(REPO, 'options/clip/tiny-rn.json'),
                           clip_pretrained=str(demo_data / 'tiny.pt'), device='cpu')
    psnr, clipiqa = [], []
    for lq_path in sorted(glob.glob(osp.join(folder, 'LQ', '*.png'))):
        lq = torch.from_numpy(read_rgb(lq_path).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            sr = net(lq).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        sr = (sr * 255.0).round()[4:-4, 4:-4]  # 8-bit output, crop_border 4
        gt = (read_rgb(lq_path.replace('LQ', 'GT')) * 255.0).round()[4:-4, 4:-4]
        psnr.append(10 * np.log10(255.0**2 / np.mean((sr - gt)**2)))
        with torch.no_grad():
            clipiqa.append(metric(torch.from_numpy((sr / 255.0).astype(np.float32)).permute(2, 0, 1)[None]).item())
    return float(np.mean(psnr)), float(np.mean(clipiqa))


@pytest.mark.slow
def test_tiny_sr_recipe_logs_psnr_and_clipiqa(sr_data, demo_data, tmp_path):
    opt = sr_options(SR_YML, sr_data, demo_data, **{'train.total_iter': 20, 'val.val_freq': 10,
                                                    'logger.print_freq': 10, 'logger.save_checkpoint_freq': 20})
    opt['train']['scheduler']['periods'] = [20]
    log = run([sys.executable, osp.join(REPO, 'uiqa_plugin', 'train.py'), '-opt', write_yaml(tmp_path, opt)],
              tmp_path)
    psnr, clipiqa = logged(log, 'psnr'), logged(log, 'clipiqa')
    assert len(psnr) >= 2 and len(clipiqa) == len(psnr), log[-3000:]  # validated at 10 and 20 (and at the end)
    assert all(0 < v < 1 for v in clipiqa) and all(15 < v < 60 for v in psnr)
    # the last validation ran net_g_latest: recompute both averages independently
    latest = tmp_path / 'experiments' / opt['name'] / 'models' / 'net_g_latest.pth'
    expected_psnr, expected_clipiqa = independent_scores(str(latest), str(sr_data / 'val'), demo_data)
    assert psnr[-1] == pytest.approx(expected_psnr, abs=2e-3)
    assert clipiqa[-1] == pytest.approx(expected_clipiqa, abs=2e-4)

    # the test.py recipe scores the outputs of that network with both metrics, and saves them without val.suffix
    test_opt = sr_options(SR_TEST_YML, sr_data, demo_data)
    test_opt['path']['pretrain_network_g'] = str(latest)
    assert 'suffix' not in test_opt['val'] and test_opt['val']['save_img']
    log = run([sys.executable, osp.join(REPO, 'uiqa_plugin', 'test.py'), '-opt',
               write_yaml(tmp_path, test_opt, 'test.yml')], tmp_path)
    expected_psnr, expected_clipiqa = independent_scores(str(latest), str(sr_data / 'test'), demo_data)
    assert logged(log, 'psnr')[-1] == pytest.approx(expected_psnr, abs=2e-3)
    assert logged(log, 'clipiqa')[-1] == pytest.approx(expected_clipiqa, abs=2e-4)
    assert 0 < logged(log, 'clipiqa_y')[-1] < 1 and logged(log, 'psnr_y')[-1] > 15
    saved = sorted(osp.basename(p) for p in glob.glob(str(tmp_path / 'results' / test_opt['name'] / 'visualization' /
                                                          '*' / '*.png')))
    names = sorted(osp.basename(p)[:-4] for p in glob.glob(str(sr_data / 'test' / 'LQ' / '*.png')))
    assert saved == [f'{n}_{test_opt["name"]}.png' for n in names]


@pytest.mark.slow
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
    assert 0 < logged(log, 'clipiqa')[-1] < 1
