"""Users' own modules: `--import` / `imports:` load registered classes before options are validated; a
custom arch trains through train.py and its checkpoint scores through uiqa-score --import."""
import csv
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import TRAIN_PY, demo_options, run, spawn, write_yaml
from uiqa_plugin.data.demo import DEMO_IMAGE_FOLDER
from uiqa_plugin.options import OptionError, validate_options
from uiqa_plugin.user_modules import UserModuleError, import_user_modules, pop_import_args, unknown_arch_message

USER_ARCH = '''
"""A user's toy IQA arch, outside the package: a small MLP on the mean colour of the image view."""
import torch
import torch.nn as nn
from basicsr.utils.registry import ARCH_REGISTRY


@ARCH_REGISTRY.register()
class MeanColourNet(nn.Module):
    views = ('image',)
    input_normalized = True  # the dataset normalizes; uiqa-score then does the same

    def __init__(self, hidden=4):
        super().__init__()
        self.fc1 = nn.Linear(3, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.attribute_names = ['quality']

    def forward(self, x):
        x = x['image'] if isinstance(x, dict) else x
        return torch.sigmoid(self.fc2(torch.tanh(self.fc1(x.mean(dim=(2, 3))))))
'''


def test_pop_import_args():
    argv = ['-opt', 'a.yml', '--import', 'pkg.arch', '--auto_resume', '--import=x.py,y', '--launcher', 'none']
    assert pop_import_args(argv) == (['-opt', 'a.yml', '--auto_resume', '--launcher', 'none'],
                                     ['pkg.arch', 'x.py', 'y'])
    with pytest.raises(UserModuleError, match='--import needs'):
        pop_import_args(['-opt', 'a.yml', '--import'])


def test_imports_option_loads_modules_from_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / 'toolbox_user_flag.py').write_text('LOADED = True\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, 'path', [p for p in sys.path if p not in ('', str(tmp_path))])
    monkeypatch.delitem(sys.modules, 'toolbox_user_flag', raising=False)
    opt = {'name': 'x', 'model_type': 'IQAModel', 'imports': ['toolbox_user_flag'],
           'datasets': {'test': {'type': 'ImageFolderDataset'}},
           'network_g': {'type': 'CLIPIQA', 'input_normalized': True}}
    validate_options(opt, is_train=False)
    assert sys.modules['toolbox_user_flag'].LOADED
    with pytest.raises(OptionError, match=r"imports: cannot import 'no_such_user_module': ModuleNotFoundError"):
        validate_options(dict(opt, imports='no_such_user_module'), is_train=False)
    with pytest.raises(OptionError, match=r'imports: .*missing\.py: file not found'):
        validate_options(dict(opt, imports=['sub/missing.py']), is_train=False)
    with pytest.raises(OptionError, match=r'imports: expected a module name or a list'):
        validate_options(dict(opt, imports=[3]), is_train=False)


def test_a_py_file_imports_once(tmp_path):
    path = tmp_path / 'toolbox_counter_mod.py'
    path.write_text('import builtins\nbuiltins.TOOLBOX_COUNT = getattr(builtins, "TOOLBOX_COUNT", 0) + 1\n')
    import builtins
    first = import_user_modules([str(path)])[0]
    second = import_user_modules(str(path))[0]
    assert first is second and builtins.TOOLBOX_COUNT == 1  # a second import would register classes twice
    del builtins.TOOLBOX_COUNT


def test_unknown_arch_message_names_the_recorded_modules():
    text = unknown_arch_message('ck.pth', 'MyNet', ['my_pkg.arch'])
    assert "arch 'MyNet' is not registered" in text and 'pass --import my_pkg.arch' in text and 'never imported' in text
    assert '--import my_pkg.my_arch' in unknown_arch_message('ck.pth', 'MyNet')


def expected_scores(checkpoint, paths):
    """MeanColourNet by hand from the saved weights, on CLIP-normalized images."""
    from uiqa_plugin.clip import CLIP_MEAN, CLIP_STD
    params = torch.load(checkpoint, map_location='cpu', weights_only=True)['params']
    out = {}
    for path in paths:
        img = np.asarray(Image.open(path).convert('RGB'), dtype=np.float64) / 255.0
        mean = torch.tensor(((img - np.array(CLIP_MEAN)) / np.array(CLIP_STD)).mean(axis=(0, 1)), dtype=torch.float32)
        hidden = torch.tanh(params['fc1.weight'] @ mean + params['fc1.bias'])
        out[path] = torch.sigmoid(params['fc2.weight'] @ hidden + params['fc2.bias']).item()
    return out


@pytest.mark.slow
def test_user_arch_trains_with_import_and_scores_with_import(demo_data, tmp_path):
    (tmp_path / 'my_arch.py').write_text(USER_ARCH)
    opt = demo_options(demo_data, **{'train.total_iter': 4, 'val.val_freq': 4, 'logger.print_freq': 2,
                                     'logger.save_checkpoint_freq': 4, 'name': 'user_arch'})
    opt['network_g'] = {'type': 'MeanColourNet', 'hidden': 6}
    for ds in opt['datasets'].values():
        ds['views'] = ['image']
    path = write_yaml(tmp_path, opt)

    # without the import the arch is unknown, found by option validation
    out = spawn([sys.executable, TRAIN_PY, '-opt', path], tmp_path, timeout=300)
    assert out.returncode != 0 and "network_g.type: unknown arch 'MeanColourNet'" in out.stderr, out.stderr[-2000:]
    assert not osp.isdir(tmp_path / 'experiments')

    log = run([sys.executable, TRAIN_PY, '-opt', path, '--import', 'my_arch.py'], tmp_path)
    assert 'End of training' in log
    checkpoint = str(tmp_path / 'experiments' / 'user_arch' / 'models' / 'net_g_4.pth')
    payload = torch.load(checkpoint, map_location='cpu', weights_only=True)
    assert payload['network_g'] == {'type': 'MeanColourNet', 'hidden': 6}
    assert payload['imports'] == [str(tmp_path / 'my_arch.py')]  # recorded for scoring, never auto-imported

    images = sorted(str(p) for p in (demo_data / DEMO_IMAGE_FOLDER).glob('coffee_*'))[:3]
    score = [sys.executable, '-m', 'uiqa_plugin.tools.score', *images, '--checkpoint', checkpoint, '--device', 'cpu',
             '--no-progress']
    out = spawn(score, tmp_path, timeout=300)
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert "arch 'MeanColourNet' is not registered" in out.stderr
    assert f'--import {tmp_path / "my_arch.py"}' in out.stderr

    table = tmp_path / 'scores.csv'
    run(score + ['--import', 'my_arch.py', '--out', str(table)], tmp_path)
    with open(table, newline='') as f:
        rows = list(csv.DictReader(f))
    expected = expected_scores(checkpoint, images)
    assert [r['path'] for r in rows] == images
    for row in rows:
        assert float(row['quality']) == pytest.approx(expected[row['path']], abs=1e-5)
    assert len({round(float(r['quality']), 6) for r in rows}) > 1
