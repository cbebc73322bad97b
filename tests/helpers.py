"""Plain helpers shared by the tests: subprocess runs as users run them, option files for the demo
data, reading logs and prediction tables, random image files. Fixtures live in conftest.py."""
import csv
import glob
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import cv2
import numpy as np
import yaml
from PIL import Image

from uiqa_plugin.data.demo import DEMO_IMAGE_FOLDER
from uiqa_plugin.tools.score import main as score_main

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TRAIN_PY = osp.join(REPO, 'uiqa_plugin', 'train.py')
TEST_PY = osp.join(REPO, 'uiqa_plugin', 'test.py')
DEMO_YML = osp.join(REPO, 'options', 'demo', 'uiqa_demo.yml')
SR_YML = osp.join(REPO, 'options', 'demo', 'sr_msrresnet_demo.yml')
SR_TEST_YML = osp.join(REPO, 'options', 'demo', 'test_sr_msrresnet_demo.yml')
# The README's demo training command ("Training"); tests/test_readme.py checks that the README shows
# exactly this line, and the session fixture ``demo_training`` runs it once for test_readme and test_training.
DEMO_TRAINING = 'python uiqa_plugin/train.py -opt options/demo/uiqa_demo.yml'
#: final validation SRCC of the demo training and how far it moves with threads and CPU kernels
#: (scripts/demo_spread.py; the README states the same)
DEMO_FINAL_SRCC, DEMO_SRCC_SPREAD = 0.4652, 0.02


# --- subprocesses -------------------------------------------------------------------------------


def spawn(args, cwd, env=None, timeout=900):
    """CompletedProcess (text) of ``args`` run in ``cwd`` with one OpenMP thread and Python warnings off.

    ``env`` adds or overrides variables. Nothing is checked: for tests of failures.
    """
    full_env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore', **(env or {})}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=str(cwd),
                          env=full_env)


def free_port():
    """A TCP port free on this machine now, for ``torch.distributed.run --master_port``: tests that run at the
    same time (pytest -n) must not share one."""
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def run(args, cwd, env=None, timeout=900):
    """``spawn`` that must exit 0 (else the tails of both streams are shown); returns stdout + stderr."""
    out = spawn(args, cwd, env=env, timeout=timeout)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-5000:])
    return out.stdout + out.stderr


def train(opt_path, cwd, *extra):
    """Log of ``python uiqa_plugin/train.py -opt opt_path *extra`` in ``cwd``, which must succeed."""
    return run([sys.executable, TRAIN_PY, '-opt', opt_path, *extra], cwd)


def tiny_clip_flags(files):
    """uiqa-score options for the tiny ResNet CLIP of the ``tiny_clip_files`` fixture, on the CPU, no progress bar."""
    return ['--clip-model', files['config'], '--clip-pretrained', files['openai'], '--device', 'cpu', '--no-progress']


def score(files, args):
    """Exit status of uiqa-score run in this process with ``args`` and ``tiny_clip_flags(files)``."""
    return score_main(args + tiny_clip_flags(files))


# Runs uiqa_plugin/train.py with one failure injected, as a kill would leave things:
#   UIQA_KILL_AT=N        the process dies (os._exit, no clean-up) at the start of iteration N
#   UIQA_KILL_IN_SAVE=P   the process dies half-way through writing a file whose name contains P
#   UIQA_FAIL_AT=N UIQA_FAIL_RANK=R   rank R raises at iteration N (the others carry on)
#   UIQA_READONLY=D       writing into a folder named D fails as on a read-only file system
#   UIQA_DISK_FULL=P      writing a file whose name contains P fails as torch.save does on a full disk
#   UIQA_INTERRUPT_AT=N   Ctrl-C (SIGINT) at the start of iteration N
#   UIQA_MODEL=M          the model class the iteration hooks above patch (default IQAModel)
# At its first iteration the run prints "cudnn.benchmark=<value>" (BasicSR's runner turns it on).
INJECT = r'''
import os, signal, sys
sys.path.insert(0, os.environ['UIQA_REPO'])
import torch
import uiqa_plugin
from basicsr.utils.registry import MODEL_REGISTRY
IQAModel = MODEL_REGISTRY.get(os.environ.get('UIQA_MODEL', 'IQAModel'))
kill_at = int(os.environ.get('UIQA_KILL_AT', 0))
interrupt_at = int(os.environ.get('UIQA_INTERRUPT_AT', 0))
original = IQAModel.optimize_parameters
def optimize_parameters(self, current_iter):
    if current_iter == 1:
        print(f'cudnn.benchmark={torch.backends.cudnn.benchmark}', flush=True)
    if current_iter == kill_at:
        os._exit(9)
    if current_iter == interrupt_at:
        os.kill(os.getpid(), signal.SIGINT)
    return original(self, current_iter)
IQAModel.optimize_parameters = optimize_parameters
def fail_saves_of(part, fail):
    # torch.save calls fail(f) for files whose name contains ``part``; checkpoint_io imports torch when it
    # saves, so the patched function is what it calls
    real_save = torch.save
    def torch_save(obj, f, *args, **kwargs):
        name = os.readlink(f'/proc/self/fd/{f.fileno()}') if hasattr(f, 'fileno') else str(f)
        if part in os.path.basename(name):
            fail(f)
        return real_save(obj, f, *args, **kwargs)
    torch.save = torch_save
def die_half_way(f):
    f.write(b'PK\x03\x04 half a file')
    f.flush()
    os._exit(9)
def disk_full(f):
    raise RuntimeError('[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing '
                       'file data/0: file write failed')
if os.environ.get('UIQA_KILL_IN_SAVE'):
    fail_saves_of(os.environ['UIQA_KILL_IN_SAVE'], die_half_way)
fail_at = int(os.environ.get('UIQA_FAIL_AT', 0))
if fail_at:
    original_step = IQAModel.optimize_parameters
    def failing(self, current_iter):
        if current_iter == fail_at and self.opt['rank'] == int(os.environ['UIQA_FAIL_RANK']):
            raise RuntimeError(f"injected failure on rank {self.opt['rank']} at iteration {current_iter}")
        return original_step(self, current_iter)
    IQAModel.optimize_parameters = failing
readonly = os.environ.get('UIQA_READONLY')
if readonly:
    import errno
    import uiqa_plugin.checkpoint_io as cio
    real_mkstemp = cio.tempfile.mkstemp
    def mkstemp(*args, **kwargs):
        folder = kwargs.get('dir')
        if folder and os.path.basename(folder) == readonly:
            raise PermissionError(errno.EROFS, 'Read-only file system', os.path.join(folder, kwargs['prefix']))
        return real_mkstemp(*args, **kwargs)
    cio.tempfile.mkstemp = mkstemp
if os.environ.get('UIQA_DISK_FULL'):
    fail_saves_of(os.environ['UIQA_DISK_FULL'], disk_full)
from uiqa_plugin.train import main
main(sys.argv[1:])
'''


def inject_script(cwd):
    script = osp.join(str(cwd), '_inject_train.py')
    with open(script, 'w') as f:
        f.write(INJECT)
    return script


def run_train(cwd, opt_path, *extra, env=None, check=True, launcher=(), timeout=600):
    """CompletedProcess of train.py (under ``launcher``, e.g. torch.distributed.run) with the failures
    that ``env`` asks for (see INJECT); with ``check`` it must exit 0."""
    out = spawn([sys.executable, *launcher, inject_script(cwd), '-opt', opt_path, *extra], cwd,
                env=dict(env or {}, UIQA_REPO=REPO), timeout=timeout)
    if check:
        assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-5000:])
    return out


# --- option files -------------------------------------------------------------------------------


def set_dotted(opt, changes):
    """Set {'train.total_iter': 5, ...} in a nested option dict; returns it."""
    for dotted, value in changes.items():
        *parents, leaf = dotted.split('.')
        node = opt
        for key in parents:
            node = node[key]
        node[leaf] = value
    return opt


def demo_options(demo_data, yml=DEMO_YML, **changes):
    """A shipped demo option file with its data and CLIP paths pointed at ``demo_data``, tensorboard off."""
    with open(yml) as f:
        opt = yaml.safe_load(f)
    for phase in opt['datasets']:
        opt['datasets'][phase]['dataroot'] = str(demo_data / DEMO_IMAGE_FOLDER)
        opt['datasets'][phase]['meta_file'] = str(demo_data / 'koniq10k_distributions_sets.csv')
    if 'network_g' in opt:  # test files may take it from their checkpoint
        opt['network_g']['clip_model'] = osp.join(REPO, 'options/clip/tiny-rn.json')
        opt['network_g']['clip_pretrained'] = str(demo_data / 'tiny.pt')
    if 'logger' in opt:
        opt['logger']['use_tb_logger'] = False
    return set_dotted(opt, changes)


def sr_options(yml, sr_data, demo_data, **changes):
    """A shipped restoration recipe with its data and CLIP paths pointed at the test's copies."""
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


def write_yaml(folder, opt, name='opt.yml'):
    path = osp.join(str(folder), name)
    with open(path, 'w') as f:
        yaml.safe_dump(opt, f)
    return path


# --- logs and tables ----------------------------------------------------------------------------


def logged(log, name):
    """Every value BasicSR logged for metric ``name`` (``# name: value``), in order."""
    return [float(v) for v in re.findall(rf'# {name}: (-?[0-9.]+|inf|nan)', log)]


def last_metric(log, name):
    values = logged(log, name)
    assert values, log[-3000:]
    return values[-1]


def read_predictions(path):
    """{key: first prediction} of a predictions CSV written by validation or test.py."""
    with open(path, newline='') as f:
        rows = csv.DictReader(f)
        first = next(c for c in rows.fieldnames if c.startswith('pred_'))  # the first output, named by attribute
        return {row['key']: float(row[first]) for row in rows}


def evaluate(demo_data, cwd, name, checkpoint=None, split='validation'):
    """Single-process evaluation of the demo network with uiqa_plugin/test.py; (srcc, {key: prediction})."""
    train_opt = demo_options(demo_data)
    val = dict(train_opt['datasets']['val'], split=split)
    opt = {'name': name, 'model_type': 'IQAModel', 'num_gpu': 0, 'manual_seed': 0, 'datasets': {'test': val},
           'network_g': train_opt['network_g'], 'path': {'pretrain_network_g': checkpoint},
           'val': {'save_predictions': True, 'metrics': {'srcc': {'type': 'calculate_srcc'}}}}
    log = run([sys.executable, TEST_PY, '-opt', write_yaml(cwd, opt, name + '.yml')], cwd)
    predictions = glob.glob(osp.join(str(cwd), 'results', name, '*_predictions_*.csv'))
    return last_metric(log, 'srcc'), read_predictions(predictions[0])


def load_script(name):
    """The module scripts/<name>.py, imported from its file (scripts/ is not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, osp.join(REPO, 'scripts', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_weights(path):
    """A saved network or training state, on the CPU, read as data (weights_only)."""
    import torch
    return torch.load(path, map_location='cpu', weights_only=True)


def fresh_python(code, timeout=300):
    """CompletedProcess of ``python -c code`` in a fresh interpreter (what is imported at start-up, registries)."""
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=timeout)


# --- the SR recipe, computed without BasicSR's metric code ----------------------------------------


def luma(rgb255):
    """ITU-R BT.601 Y of 8-bit RGB values, in [16, 235], as BasicSR's to_y_channel."""
    r, g, b = (rgb255[..., i] / 255.0 for i in range(3))
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def independent_sr_per_image(net_path, folder, demo_data):
    """{image name: {psnr, clipiqa, psnr_y, clipiqa_y}} of the tiny MSRResNet's 8-bit outputs on ``folder``/LQ
    against ``folder``/GT, crop_border 4 (the *_y on the BT.601 luma, CLIP seeing it replicated to RGB)."""
    import torch
    from basicsr.archs.srresnet_arch import MSRResNet

    from uiqa_plugin.api import create_metric

    def read_rgb(path):
        return np.asarray(Image.open(path).convert('RGB'), dtype=np.float64) / 255.0

    def clipiqa(rgb01):
        with torch.no_grad():
            return metric(torch.from_numpy(rgb01.astype(np.float32)).permute(2, 0, 1)[None]).item()

    net = MSRResNet(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2, upscale=4)
    net.load_state_dict(torch.load(net_path, map_location='cpu', weights_only=True)['params'])
    net.eval()
    metric = create_metric('quality', clip_model=osp.join(REPO, 'options/clip/tiny-rn.json'),
                           clip_pretrained=str(demo_data / 'tiny.pt'), device='cpu')
    scores = {}
    for lq_path in sorted(glob.glob(osp.join(folder, 'LQ', '*.png'))):
        lq = torch.from_numpy(read_rgb(lq_path).astype(np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            sr = net(lq).clamp(0, 1)[0].permute(1, 2, 0).numpy()
        sr = (sr * 255.0).round()[4:-4, 4:-4]  # 8-bit output, crop_border 4
        gt = (read_rgb(lq_path.replace('LQ', 'GT')) * 255.0).round()[4:-4, 4:-4]
        scores[osp.splitext(osp.basename(lq_path))[0]] = {
            'psnr': 10 * np.log10(255.0**2 / np.mean((sr - gt)**2)), 'clipiqa': clipiqa(sr / 255.0),
            'psnr_y': 10 * np.log10(255.0**2 / np.mean((luma(sr) - luma(gt))**2)),
            'clipiqa_y': clipiqa(np.repeat(luma(sr)[..., None] / 255.0, 3, axis=2))}
    return scores


def independent_sr_scores(net_path, folder, demo_data):
    """{psnr, clipiqa, psnr_y, clipiqa_y}: means over ``independent_sr_per_image``."""
    per_image = list(independent_sr_per_image(net_path, folder, demo_data).values())
    return {name: float(np.mean([row[name] for row in per_image])) for name in per_image[0]}


# --- images -------------------------------------------------------------------------------------


def random_pixels(rng, shape, bits=8):
    """Uniform random pixels of ``shape`` from a numpy Generator: uint8, or uint16 with ``bits=16``."""
    return rng.integers(0, 2 ** bits, shape, dtype=np.uint8 if bits == 8 else np.uint16)


def write_image(path, pixels, mode=None, **save_options):
    """Write (h, w) grey, (h, w, 3) RGB or (h, w, 4) RGBA pixels; uint16 goes through OpenCV (16-bit PNG,
    channels taken as BGR). ``mode`` and ``save_options`` (e.g. quality=90) go to PIL. Returns str(path)."""
    if pixels.dtype == np.uint16:
        assert cv2.imwrite(str(path), pixels), path
    else:
        Image.fromarray(pixels, mode).save(path, **save_options)
    return str(path)


def write_random_image(path, shape, rng, bits=8, mode=None, **save_options):
    """``write_image`` of ``random_pixels(rng, shape, bits)``; returns str(path)."""
    return write_image(path, random_pixels(rng, shape, bits), mode, **save_options)


def random_photo_folder(folder, sizes, seed):
    """Create ``folder`` holding img0.png, img1.png ... of random RGB pixels, one per (height, width) in
    ``sizes``, drawn from ``np.random.default_rng(seed)``; returns the folder."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i, (height, width) in enumerate(sizes):
        write_random_image(folder / f'img{i}.png', (height, width, 3), rng)
    return folder
