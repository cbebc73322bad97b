"""Shared fixtures: tiny random CLIP models saved as real weight files, so every loading path runs offline."""
import os.path as osp
import sys
import warnings

import pytest
import torch

sys.path.insert(0, osp.dirname(__file__))

import subprocess  # noqa: E402

import uiqa_plugin  # noqa: E402,F401  (installs the basicsr compatibility alias first)
from tiny_clip import TINY_RN_CONFIG, TINY_VIT_CONFIG, write_config  # noqa: E402


def _build(config_path, seed, quick_gelu=False):
    import open_clip
    from uiqa_plugin.clip_backbone import _resolve_model_config
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return open_clip.create_model(_resolve_model_config(config_path), pretrained=None,
                                      force_quick_gelu=quick_gelu)


@pytest.fixture(scope='session')
def tiny_clip_files(tmp_path_factory):
    """Config and weight files of one tiny random ResNet CLIP in the formats users have.

    Returns a dict: config, openai (plain state dict with OpenAI's extra keys), openclip
    (``{'state_dict'}`` with ``module.`` prefixes), torchscript (a scripted archive), vit_config,
    vit_weights. All three RN files hold the same weights with the config's GELU, so the
    activation rule gives all three the same model (tests/test_fidelity.py covers QuickGELU).
    """
    folder = tmp_path_factory.mktemp('tiny_clip')
    config = write_config(folder, 'tiny_rn', TINY_RN_CONFIG)
    model = _build(config, seed=0)
    state = model.state_dict()
    files = {'config': config}
    files['openai'] = str(folder / 'tiny_openai.pt')
    torch.save({**state, 'input_resolution': torch.tensor(64), 'context_length': torch.tensor(77),
                'vocab_size': torch.tensor(49408)}, files['openai'])
    files['openclip'] = str(folder / 'tiny_openclip.pt')
    torch.save({'epoch': 3, 'state_dict': {'module.' + k: v for k, v in state.items()}}, files['openclip'])
    files['torchscript'] = str(folder / 'tiny_scripted.pt')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit.script is deprecated; OpenAI's archives are TorchScript
        torch.jit.script(model).save(files['torchscript'])
    vit_config = write_config(folder, 'tiny_vit', TINY_VIT_CONFIG)
    files['vit_config'] = vit_config
    files['vit_weights'] = str(folder / 'tiny_vit.pt')
    torch.save(_build(vit_config, seed=1).state_dict(), files['vit_weights'])
    return files


@pytest.fixture
def tiny_metric_factory(tiny_clip_files):
    """Build CLIPIQA models on the tiny ResNet CLIP (plain state dict weights)."""
    from uiqa_plugin.api import create_metric

    def make(attributes='quality', **kwargs):
        return create_metric(attributes, clip_model=tiny_clip_files['config'],
                             clip_pretrained=tiny_clip_files['openai'], device='cpu', **kwargs)
    return make


REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: trains for more than a few iterations (deselect with -m "not slow")')


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The demo dataset and the BatchNorm-calibrated tiny CLIP, built by the shipped scripts."""
    root = tmp_path_factory.mktemp('demo')
    data = root / 'demo'
    for script, args in [('make_demo_dataset.py', ['--out', str(data)]),
                         ('make_tiny_clip.py', ['--images', str(data / '1024x768'), '--out', str(data / 'tiny.pt'),
                                                '--config', osp.join(REPO, 'options/clip/tiny-rn.json')])]:
        out = subprocess.run([sys.executable, osp.join(REPO, 'scripts', script)] + args, capture_output=True,
                             text=True, timeout=600, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
    return data


@pytest.fixture(scope='session')
def sr_data(demo_data, tmp_path_factory):
    """Bicubic x4 pairs of the demo's clean photos (scripts/make_sr_demo.py): {train,val,test}/{GT,LQ}."""
    out = tmp_path_factory.mktemp('demo_sr')
    done = subprocess.run([sys.executable, osp.join(REPO, 'scripts', 'make_sr_demo.py'), '--demo', str(demo_data),
                           '--out', str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture
def uiqa_checkpoint_factory(tiny_clip_files, tmp_path):
    """Write a CLIP-UIQA checkpoint (learned view weights drawn with seed 3) for given view options.

    Returns make(views) -> (checkpoint path, the network it holds).
    """
    from basicsr.utils.registry import ARCH_REGISTRY

    def make(views):
        options = {'type': 'CLIPUIQA', 'attributes': 'quality,sharpness', 'aggregation': 'learned',
                   'clip_model': tiny_clip_files['config'], 'clip_pretrained': tiny_clip_files['openai']}
        torch.manual_seed(3)
        net = ARCH_REGISTRY.get('CLIPUIQA')(**{k: v for k, v in options.items() if k != 'type'})
        with torch.no_grad():
            net.aggregation.view_logits.normal_()
        path = tmp_path / 'uiqa.pth'
        torch.save({'params': net.state_dict(), 'network_g': options, 'view_options': views}, path)
        return str(path), net
    return make
