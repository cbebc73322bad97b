"""Interrupted training resumes exactly: a run killed at any iteration (or inside a save) and
continued with --auto_resume ends bit-identical (CPU) to the uninterrupted run, the best
checkpoint and its record included; unreadable latest states are skipped and named."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from test_training import REPO, demo_options, write_yaml

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
in_save = os.environ.get('UIQA_KILL_IN_SAVE')
if in_save:
    import uiqa_plugin.checkpoint_io as cio
    real_save = torch.save
    def torch_save(obj, f, *args, **kwargs):
        name = os.readlink(f'/proc/self/fd/{f.fileno()}') if hasattr(f, 'fileno') else str(f)
        if in_save in os.path.basename(name):
            f.write(b'PK\x03\x04 half a file')
            f.flush()
            os._exit(9)
        return real_save(obj, f, *args, **kwargs)
    cio.torch.save = torch_save
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
disk_full = os.environ.get('UIQA_DISK_FULL')
if disk_full:
    import uiqa_plugin.checkpoint_io as cio
    real_torch_save = cio.torch.save
    def full_disk_save(obj, f, *args, **kwargs):
        name = os.readlink(f'/proc/self/fd/{f.fileno()}') if hasattr(f, 'fileno') else str(f)
        if disk_full in os.path.basename(name):
            raise RuntimeError('[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing '
                               'file data/0: file write failed')
        return real_torch_save(obj, f, *args, **kwargs)
    cio.torch.save = full_disk_save
from uiqa_plugin.train import main
main(sys.argv[1:])
'''


def inject_script(cwd):
    script = osp.join(str(cwd), '_inject_train.py')
    with open(script, 'w') as f:
        f.write(INJECT)
    return script


def run_train(cwd, opt_path, *extra, env=None, check=True, launcher=(), timeout=600):
    """Run uiqa_plugin/train.py (with the failure hooks of INJECT) in ``cwd``; the CompletedProcess."""
    full_env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore', UIQA_REPO=REPO)
    full_env.update(env or {})
    out = subprocess.run([sys.executable, *launcher, inject_script(cwd), '-opt', opt_path, *extra],
                         capture_output=True, text=True, timeout=timeout, cwd=str(cwd), env=full_env)
    if check:
        assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-5000:])
    return out


def resume_options(demo_data, name, workers=0, **changes):
    """32 iterations over 16-batch epochs: resumes land inside an epoch and runs cross epochs."""
    settings = {'train.total_iter': 32, 'val.val_freq': 6, 'logger.print_freq': 4,
                'logger.save_checkpoint_freq': 5, 'name': name, 'val.pbar': False, 'train.ema_decay': 0.9}
    settings.update(changes)
    opt = demo_options(demo_data, **settings)
    opt['datasets']['train']['batch_size_per_gpu'] = 8
    opt['datasets']['train']['num_worker_per_gpu'] = workers
    opt['datasets']['train']['views'] = opt['datasets']['val']['views'] = {
        'image': {'size': 64}, 'fragments': {'grid': 2, 'patch': 32}, 'salient': {'size': 64}}
    return opt


def load(path):
    return torch.load(path, map_location='cpu', weights_only=True)


def assert_same_weights(a, b):
    a, b = load(a), load(b)
    for key in ('params', 'params_ema'):
        assert a[key].keys() == b[key].keys()
        different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
        assert not different, (key, different[:5])


def best_lines(log):
    return re.findall(r'# srcc: (-?[0-9.]+)\tBest: (-?[0-9.]+) @ (\d+) iter', log)


@pytest.fixture(scope='module')
def reference_run(demo_data, tmp_path_factory):
    """reference_run(workers) -> (experiment folder, log) of the uninterrupted run, run once per module."""
    done = {}

    def get(workers=0):
        if workers not in done:
            ref = tmp_path_factory.mktemp(f'ref{workers}')
            out = run_train(ref, write_yaml(ref, resume_options(demo_data, 'exact', workers=workers)))
            done[workers] = (ref / 'experiments' / 'exact', out.stdout + out.stderr)
        return done[workers]
    return get


@pytest.mark.slow
@pytest.mark.parametrize('workers', [0, 2])
def test_killed_run_resumes_bit_identical_with_best_checkpoint(demo_data, tmp_path, reference_run, workers):
    # Random flips and fragment offsets are drawn in the main process (0 workers) or in the
    # workers (2): both resume at the same samples with the same random numbers.
    ref_exp, ref_log = reference_run(workers)
    # The last iteration is 32, validated once (not at 33 or 34), and the final record names it.
    assert best_lines(ref_log)[-1][2] in {'6', '12', '18', '24', '30', '32'}
    assert len(re.findall(r'Validation demo_val', ref_log)) == 6  # 6, 12, 18, 24, 30 and the final 32
    assert 'eta: -' not in ref_log

    run = tmp_path / 'run'
    run.mkdir()
    path = write_yaml(run, resume_options(demo_data, 'exact', workers=workers))
    killed = run_train(run, path, env={'UIQA_KILL_AT': '23'}, check=False)  # mid-epoch 1, after the save at 20
    assert killed.returncode == 9
    exp = run / 'experiments' / 'exact'
    assert sorted(os.listdir(exp / 'training_states')) == sorted(
        f'{i}.{ext}' for i in (5, 10, 15, 20) for ext in ('state', 'loop.pth'))
    resumed = run_train(run, path, '--auto_resume')
    log = resumed.stdout + resumed.stderr
    assert 'Resuming training from epoch: 1, iter: 20.' in log
    assert ('replaying its first 4 batches' in log) == (workers > 0)
    for name in ('net_g_latest.pth', 'net_g_best.pth', 'net_g_30.pth'):
        assert_same_weights(ref_exp / 'models' / name, exp / 'models' / name)
    # The best record travelled in the state: the same "Best @" lines as the uninterrupted run after 20.
    assert best_lines(log) == best_lines(ref_log)[-len(best_lines(log)):]
    state, ref_state = (load(e / 'training_states' / '30.loop.pth') for e in (exp, ref_exp))
    assert state['best_metric_results'] == ref_state['best_metric_results']


@pytest.mark.slow
def test_kill_inside_a_save_and_broken_states_fall_back_to_the_last_good_one(demo_data, tmp_path, reference_run):
    ref_exp, _ = reference_run()
    run = tmp_path / 'run'
    run.mkdir()
    path = write_yaml(run, resume_options(demo_data, 'exact'))
    # Killed while writing 20.state: the atomic save leaves no 20.state, only a stray temp file.
    killed = run_train(run, path, env={'UIQA_KILL_IN_SAVE': '20.state'}, check=False)
    assert killed.returncode == 9
    states = exp_states = run / 'experiments' / 'exact' / 'training_states'
    assert sorted(n for n in os.listdir(states) if n.endswith('.state')) == ['10.state', '15.state', '5.state']
    # Plant what real kills left behind with BasicSR's in-place writes: a 0-byte newer state and a truncated 15.
    (exp_states / '25.state').write_bytes(b'')
    data = (exp_states / '15.state').read_bytes()
    (exp_states / '15.state').write_bytes(data[:len(data) // 2])
    resumed = run_train(run, path, '--auto_resume')
    log = resumed.stdout + resumed.stderr
    assert re.search(r'auto_resume: skipped training state \S+25\.state: the file is empty', log), log[-3000:]
    assert re.search(r'auto_resume: skipped training state \S+15\.state: cannot be read', log), log[-3000:]
    assert 'Resuming training from epoch: 0, iter: 10.' in log
    exp = run / 'experiments' / 'exact'
    for name in ('net_g_latest.pth', 'net_g_best.pth'):
        assert_same_weights(ref_exp / 'models' / name, exp / 'models' / name)


@pytest.mark.slow
def test_no_readable_state_is_an_error_naming_each_file(demo_data, tmp_path):
    opt = resume_options(demo_data, 'broken', **{'train.total_iter': 5})
    path = write_yaml(tmp_path, opt)
    run_train(tmp_path, path)
    states = tmp_path / 'experiments' / 'broken' / 'training_states'
    (states / '5.state').write_bytes(b'\x00' * 100)
    os.remove(tmp_path / 'experiments' / 'broken' / 'models' / 'net_g_5.pth')
    out = run_train(tmp_path, path, '--auto_resume', check=False)
    assert out.returncode != 0 and 'Traceback' not in out.stderr
    assert 'no readable training state' in out.stderr and '5.state' in out.stderr
    assert not list(tmp_path.glob('experiments/broken_archived_*'))  # nothing renamed away


def test_ema_average_matches_its_definition():
    from uiqa_plugin.models.ema import ParameterEMA
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    net[1].weight.requires_grad_(False)  # frozen parts are not averaged
    ema = ParameterEMA(net, 0.8)
    expected = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p))
        ema.update(net)
        for n, p in net.named_parameters():
            if n in expected:
                expected[n] = 0.8 * expected[n] + 0.2 * p.detach()
    assert set(ema.shadow) == {'0.weight', '0.bias', '1.bias'}
    for n, value in expected.items():
        assert torch.allclose(ema.shadow[n], value, atol=1e-6)
    live = {n: p.detach().clone() for n, p in net.named_parameters()}
    x = torch.randn(4, 3)
    with ema.applied(net):
        out_ema = net(x)
        assert torch.equal(net[0].weight, ema.shadow['0.weight'])
    assert all(torch.equal(p, live[n]) for n, p in net.named_parameters())  # restored afterwards
    state = ema.state_dict(net)
    assert torch.equal(state['1.weight'], live['1.weight']) and torch.equal(state['0.bias'], ema.shadow['0.bias'])
    reference = torch.nn.functional.linear(torch.nn.functional.linear(x, expected['0.weight'], expected['0.bias']),
                                           live['1.weight'], expected['1.bias'])
    assert torch.allclose(out_ema, reference, atol=1e-6)
