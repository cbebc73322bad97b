"""scripts/demo_spread.py reads what a demo training logged and wrote (the runs themselves are minutes each)."""
import importlib.util
import os.path as osp

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


@pytest.fixture(scope='module')
def spread():
    spec = importlib.util.spec_from_file_location('demo_spread', osp.join(REPO, 'scripts', 'demo_spread.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOG = """ATen kernels: AVX2 | oneDNN: False | threads: 2
2026-11-30 INFO: [demo_..][epoch:  3, iter:      50, lr:(2.972e-03,)] [eta: 0:01:02] l_mse: 5.4257e-02 l_total: 5.4257e-02
2026-11-30 INFO: [demo_..][epoch:  6, iter:     100, lr:(2.8e-03,)] [eta: 0:01:00] l_mse: 4.1e-02 l_total: 4.1e-02
INFO: Validation demo_val (32 images)
\t # srcc: 0.4100\tBest: 0.4100 @ 200 iter
\t # plcc: 0.3000\tBest: 0.3000 @ 200 iter
INFO: Validation demo_val (32 images)
\t # srcc: 0.3900\tBest: 0.4100 @ 200 iter
\t # plcc: 0.3100\tBest: 0.3100 @ 400 iter
"""


def test_parse_log_takes_the_first_loss_and_the_last_validation(spread):
    found = spread.parse_log(LOG)
    assert found['capability'] == 'AVX2, no oneDNN' and found['threads'] == 2
    assert found['first_loss'] == (50, 5.4257e-02)
    assert (found['final'], found['best'], found['best_iter']) == (0.39, 0.41, 200)
    assert spread.parse_log('nothing')['final'] is None


def test_read_predictions_takes_the_latest_iteration_numerically(spread, tmp_path):
    for it, value in ((400, 0.25), (1000, 0.75), (200, 0.5)):
        (tmp_path / f'demo_val_predictions_{it}.csv').write_text(f'key,pred_0,target_0\na.jpg,{value},0.1\n')
    assert spread.read_predictions(str(tmp_path)) == {'a.jpg': 0.75}
    assert spread.read_predictions(str(tmp_path / 'none')) == {}


def test_settings_clear_the_shells_kernel_variables(spread):
    assert set(spread.KNOWN_VARIABLES) >= {'ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA',
                                           'MKL_CBWR', 'OMP_NUM_THREADS'}
    assert spread.SETTINGS['threads-1'] == {} and spread.SETTINGS['threads-2'] == {'OMP_NUM_THREADS': '2'}
