"""Shared fixtures: tiny random CLIP models saved as real weight files (every loading path runs offline),
the demo data and the README's demo training; the ``slow`` marker. Plain helpers: helpers.py."""
import os
import os.path as osp
import shlex
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

sys.path.insert(0, osp.dirname(__file__))

import uiqa_plugin  # noqa: E402  (installs the basicsr compatibility alias first)
from helpers import DEMO_TRAINING, REPO, run  # noqa: E402
from tiny_clip import TINY_RN_CONFIG, TINY_VIT_CONFIG, write_config  # noqa: E402
from uiqa_plugin.data.demo import DEMO_IMAGE_FOLDER  # noqa: E402

uiqa_plugin.register()  # every test module sees BasicSR's registries filled, as after any lookup


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: runs subprocesses, torchrun or training (quick lane: -m "not slow")')


def _build(config_path, seed, quick_gelu=False):
    import open_clip
    from uiqa_plugin.clip import resolve_model_config
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return open_clip.create_model(resolve_model_config(config_path), pretrained=None,
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


def built_once(tmp_path_factory, name, build):
    """(folder, text): ``build(folder)`` run once for the whole session, returning text (or None).

    Under pytest-xdist (``pytest -n 2``) every worker is a process with its own session: the first
    worker that needs ``name`` builds it in the folder all workers share, under a file lock, and the
    others wait for it and read the same files. Whatever is built there is only read afterwards.
    """
    try:
        import fcntl
    except ImportError:  # no POSIX file locks (Windows): each worker builds its own
        fcntl = None
    if 'PYTEST_XDIST_WORKER' not in os.environ or fcntl is None:
        folder = tmp_path_factory.mktemp(name)
        return folder, build(folder)
    shared = tmp_path_factory.getbasetemp().parent
    folder, done = shared / f'built-{name}', shared / f'built-{name}.done'
    with open(shared / f'built-{name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)  # left by a worker whose build failed
            folder.mkdir()
            text = build(folder)
            done.write_text('' if text is None else text, encoding='utf-8')
        return folder, done.read_text(encoding='utf-8')


@pytest.fixture(scope='session')
def demo_data(tmp_path_factory):
    """The demo dataset and the BatchNorm-calibrated tiny CLIP, built by the shipped scripts."""
    def build(root):
        data = root / 'demo'
        for script, args in [('make_demo_dataset.py', ['--out', str(data)]),
                             ('make_tiny_clip.py', ['--images', str(data / DEMO_IMAGE_FOLDER), '--out',
                                                    str(data / 'tiny.pt'),
                                                    '--config', osp.join(REPO, 'options/clip/tiny-rn.json')])]:
            out = subprocess.run([sys.executable, osp.join(REPO, 'scripts', script)] + args, capture_output=True,
                                 text=True, timeout=600, cwd=REPO)
            assert out.returncode == 0, out.stderr[-3000:]
    return built_once(tmp_path_factory, 'demo', build)[0] / 'demo'


@pytest.fixture(scope='session')
def demo_training(demo_data, tmp_path_factory):
    """(folder, log) of the README's demo training (helpers.DEMO_TRAINING), run once.

    The folder is laid out like the README's: links to scripts/, options/, uiqa_plugin/ and
    datasets/demo/ holding the demo data and the tiny CLIP as the README names them; the run leaves
    experiments/ and tb_logger/ there. ``--force_yml val:save_predictions=true`` adds the validation
    prediction tables, which change no number.
    """
    def build(root):
        for name in ('scripts', 'options', 'uiqa_plugin'):
            os.symlink(osp.join(REPO, name), root / name)
        demo = root / 'datasets' / 'demo'
        demo.mkdir(parents=True)
        for name, target in ((DEMO_IMAGE_FOLDER, DEMO_IMAGE_FOLDER), ('koniq10k_distributions_sets.csv',) * 2,
                             ('tiny_clip.pt', 'tiny.pt')):
            os.symlink(demo_data / target, demo / name)
        assert DEMO_TRAINING.startswith('python ')
        command = shlex.quote(sys.executable) + DEMO_TRAINING[len('python'):]
        return run(['bash', '-c', command + ' --force_yml val:save_predictions=true'], root)
    return built_once(tmp_path_factory, 'demo_training', build)


@pytest.fixture(scope='session')
def sr_data(demo_data, tmp_path_factory):
    """Bicubic x4 pairs of the demo's clean photos (scripts/make_sr_demo.py): {train,val,test}/{GT,LQ}."""
    def build(out):
        done = subprocess.run([sys.executable, osp.join(REPO, 'scripts', 'make_sr_demo.py'), '--demo',
                               str(demo_data), '--out', str(out)], capture_output=True, text=True, timeout=300,
                              cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
    return built_once(tmp_path_factory, 'demo_sr', build)[0]


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
