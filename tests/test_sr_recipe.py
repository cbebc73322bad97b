"""The restoration recipe: a tiny MSRResNet (BasicSR's SRModel) trains on the demo photos with PSNR and
CLIP-IQA in its validation; the test.py recipe scores its outputs; the logged values are the real ones."""
import glob
import os.path as osp
import sys

import pytest

from helpers import (SR_TEST_YML, SR_YML, TEST_PY, TRAIN_PY, independent_sr_scores, logged, run, sr_options,
                     write_yaml)

pytestmark = pytest.mark.slow  # SR trainings and evaluations in subprocesses



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
        expected = independent_sr_scores(str(checkpoint), str(sr_data / 'val'), demo_data)
        assert psnr[index] == pytest.approx(expected['psnr'], abs=2e-3), checkpoint
        assert clipiqa[index] == pytest.approx(expected['clipiqa'], abs=2e-4), checkpoint

    # the test.py recipe scores the outputs of that network with both metrics, and saves them without val.suffix
    test_opt = sr_options(SR_TEST_YML, sr_data, demo_data)
    test_opt['path']['pretrain_network_g'] = str(latest)
    assert 'suffix' not in test_opt['val'] and test_opt['val']['save_img']
    log = run([sys.executable, TEST_PY, '-opt', write_yaml(tmp_path, test_opt, 'test.yml')], tmp_path)
    expected = independent_sr_scores(str(latest), str(sr_data / 'test'), demo_data)
    for name in ('psnr', 'psnr_y'):
        assert logged(log, name)[-1] == pytest.approx(expected[name], abs=2e-3), name
    for name in ('clipiqa', 'clipiqa_y'):
        assert logged(log, name)[-1] == pytest.approx(expected[name], abs=2e-4), name
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
    expected = independent_sr_scores(str(tmp_path / 'experiments' / 'own_script' / 'models' / 'net_g_latest.pth'),
                                  str(sr_data / 'val'), demo_data)
    assert logged(log, 'clipiqa')[-1] == pytest.approx(expected['clipiqa'], abs=2e-4)
