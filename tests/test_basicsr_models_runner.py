"""BasicSR's own models (SRModel with a tiny MSRResNet, ESRGANModel with a tiny RRDB and a VGG-style
discriminator, nothing downloaded) through our runner in every run mode: two CPU processes under
torchrun validate, test and save images as one process does; a killed run resumed with
--auto_resume ends bit-identical to the uninterrupted one; option overrides are checked."""
import glob
import hashlib
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch

from helpers import (REPO, SR_TEST_YML, SR_YML, free_port, load_weights as load, logged, run_train, sr_options,
                     write_yaml)

TORCHRUN = ('-m', 'torch.distributed.run', '--nproc_per_node=2')
RRDB = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 8,
        'scale': 4}


def model_options(model, sr_data, demo_data, name, yml=SR_YML, **changes):
    """The SR recipe for ``model`` ('SRModel' or 'ESRGANModel'): 8 iterations of batch 2 (4 per epoch),
    validated at 4 and 8 with images saved, states saved every 3 iterations."""
    opt = sr_options(yml, sr_data, demo_data)
    opt['name'] = name
    if 'train' in opt:
        opt['train']['total_iter'] = 8
        opt['train']['scheduler']['periods'] = [8]
        opt['train']['ema_decay'] = 0.9  # BasicSR's net_g_ema: saved as params_ema, restored on resume
        opt['datasets']['train'].update(batch_size_per_gpu=2, gt_size=32)
        opt['val'].update(val_freq=4, save_img=True)
        opt['logger'].update(print_freq=2, save_checkpoint_freq=3)
    if model == 'ESRGANModel':
        opt['model_type'] = 'ESRGANModel'
        opt['network_g'] = dict(RRDB)
        if 'train' in opt:
            opt['network_d'] = {'type': 'VGGStyleDiscriminator', 'num_in_ch': 3, 'num_feat': 8, 'input_size': 128}
            opt['datasets']['train']['gt_size'] = 128  # the VGG-style discriminator takes 128x128
            opt['train'].update(
                optim_d={'type': 'Adam', 'lr': 1e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                gan_opt={'type': 'GANLoss', 'gan_type': 'vanilla', 'real_label_val': 1.0, 'fake_label_val': 0.0,
                         'loss_weight': 5e-3},
                net_d_iters=1, net_d_init_iters=0)  # no perceptual_opt: the VGG weights would be downloaded
            opt['train']['scheduler'] = {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5}
    for key, value in changes.items():
        opt[key] = value
    return opt


def run_script(script, cwd, opt_path, *extra, launcher=(), check=True):
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    out = subprocess.run([sys.executable, *launcher, osp.join(REPO, 'uiqa_plugin', script), '-opt', opt_path, *extra],
                         capture_output=True, text=True, timeout=600, cwd=str(cwd), env=env)
    if check:
        assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-5000:])
    return out


def images(folder):
    """{file name: sha1 of its bytes} of the PNGs under ``folder``."""
    return {osp.basename(p): hashlib.sha1(open(p, 'rb').read()).hexdigest()
            for p in glob.glob(osp.join(str(folder), '**', '*.png'), recursive=True)}


@pytest.mark.slow
@pytest.mark.parametrize('model', ['SRModel', 'ESRGANModel'])
def test_two_cpu_processes_train_validate_and_test_as_one(model, sr_data, demo_data, tmp_path):
    opt = model_options(model, sr_data, demo_data, 'two')
    trained = run_train(tmp_path, write_yaml(tmp_path, opt), env={'UIQA_MODEL': model},
                        launcher=TORCHRUN + (f'--master_port={free_port()}',))
    train_log = trained.stdout + trained.stderr
    assert 'cudnn.benchmark=True' in train_log  # BasicSR's runner setting, kept
    # Rank 0 validated the whole set (2 images), and saved every output, at 4 and at 8.
    assert len(images(tmp_path / 'experiments' / 'two' / 'visualization')) == 2 * 2
    latest = tmp_path / 'experiments' / 'two' / 'models' / 'net_g_latest.pth'

    test_opt = model_options(model, sr_data, demo_data, 'one_test', yml=SR_TEST_YML)
    test_opt['path']['pretrain_network_g'] = str(latest)
    one_run = run_script('test.py', tmp_path, write_yaml(tmp_path, test_opt, 'one.yml'))
    one = one_run.stdout + one_run.stderr
    test_opt['name'] = 'two_test'
    two = run_script('test.py', tmp_path, write_yaml(tmp_path, test_opt, 'two.yml'),
                     launcher=TORCHRUN + (f'--master_port={free_port()}',)).stderr
    for metric in ('psnr', 'psnr_y', 'clipiqa', 'clipiqa_y'):
        assert logged(two, metric) == pytest.approx(logged(one, metric), abs=1e-4), metric
    saved_one, saved_two = ({k.replace(f'_{n}.png', ''): v for k, v in images(tmp_path / 'results' / n).items()}
                            for n in ('one_test', 'two_test'))
    assert len(saved_one) == 2 and saved_two == saved_one  # every image, the same bytes
    # No "Best: 25.7 @ two_test iter" (a run name is no iteration), nothing of BasicSR's banner on the terminal.
    assert 'two_test iter' not in two and 'Best:' not in one
    assert 'Disable distributed' not in one  # BasicSR's parser printed it on stdout in every one-process run
    network_print = 'RRDBNet(' if model == 'ESRGANModel' else 'MSRResNet('
    for kept_out in ('Version Information', 'network_g:', network_print):
        assert kept_out not in train_log, kept_out
    text = open(glob.glob(str(tmp_path / 'experiments' / 'two' / 'train_two_*.log'))[0]).read()
    assert 'Version Information' in text and 'network_g:' in text and network_print in text


def assert_same_files(ref, new, names, keys=('params', 'params_ema')):
    for name in names:
        a, b = load(ref / name), load(new / name)
        for key in keys:
            if key in a:
                assert a[key].keys() == b[key].keys()
                different = [k for k in a[key] if not torch.equal(a[key][k], b[key][k])]
                assert not different, (name, key, different[:5])


@pytest.mark.slow
@pytest.mark.parametrize('model', ['SRModel', 'ESRGANModel'])
def test_killed_basicsr_model_resumes_bit_identical(model, sr_data, demo_data, tmp_path):
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    for folder in (ref, run):
        folder.mkdir()
    opt = model_options(model, sr_data, demo_data, 'exact')
    ref_log = run_train(ref, write_yaml(ref, opt), env={'UIQA_MODEL': model})
    path = write_yaml(run, opt)
    killed = run_train(run, path, env={'UIQA_KILL_AT': '5', 'UIQA_MODEL': model}, check=False)
    assert killed.returncode == 9  # after the save at 3, inside the first epoch (4 batches)
    resumed = run_train(run, path, '--auto_resume', env={'UIQA_MODEL': model})
    log = resumed.stdout + resumed.stderr
    assert 'Resuming training from epoch: 0, iter: 3.' in log and 'random numbers' not in log, log[-3000:]
    names = ['net_g_latest.pth', 'net_g_6.pth'] + (['net_d_latest.pth'] if model == 'ESRGANModel' else [])
    assert_same_files(ref / 'experiments' / 'exact' / 'models', run / 'experiments' / 'exact' / 'models', names)
    # The best record travelled with the state: the final "Best: ... @ iter" lines are the uninterrupted run's.
    best = r'# (\w+): \S+\tBest: (\S+) @ (\d+) iter'
    ref_text = ref_log.stdout + ref_log.stderr
    assert re.findall(best, log)[-4:] == re.findall(best, ref_text)[-4:] != []


# ----------------------------------------------------------------------------- the command line, in process

def run_in_process(argv):
    """train.py's exit code for ``argv`` (runs that must stop before any work)."""
    from uiqa_plugin.train import main
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_force_yml_overrides_are_validated(sr_data, demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_yaml(tmp_path, model_options('SRModel', sr_data, demo_data, 'forced'))
    assert run_in_process(['-opt', path, '--force_yml', 'logger:save_checkpoint_freq=0']) == 2
    err = capsys.readouterr().err
    assert 'with --force_yml logger:save_checkpoint_freq=0' in err and 'logger.save_checkpoint_freq: must be positive' in err
    assert run_in_process(['-opt', path, '--force_yml', 'loger:print_freq=2']) == 2
    assert 'the option file has no block loger' in capsys.readouterr().err
    assert not (tmp_path / 'experiments').exists()


def test_options_are_read_once_and_sys_argv_is_left_alone(sr_data, demo_data, tmp_path, monkeypatch):
    from uiqa_plugin.runner import command_line
    monkeypatch.chdir(tmp_path)
    path = write_yaml(tmp_path, model_options('SRModel', sr_data, demo_data, 'once'))
    seen = {}
    monkeypatch.setattr(command_line, 'train_pipeline', lambda opt, opt_path, early: seen.update(opt=opt))
    argv_before = list(sys.argv)
    command_line.run_pipeline(True, ['-opt', path, '--force_yml', 'train:total_iter=6', 'val:val_freq=3'])
    assert sys.argv == argv_before
    assert seen['opt']['train']['total_iter'] == 6 and seen['opt']['val']['val_freq'] == 3
    assert seen['opt']['path']['experiments_root'] == osp.join(str(tmp_path), 'experiments', 'once')


@pytest.mark.parametrize('name, problem', [
    ('../../escaped', 'must be a plain folder name'),
    ('sub/dir', 'must be a plain folder name'),
    ('ABSOLUTE', 'must be a plain folder name'),
    ('..', 'is not a folder name'),
    ('x' * 300, '300 bytes long, at most 200'),
])
def test_experiment_name_is_one_folder_name(name, problem, sr_data, demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'keep.txt').write_text('not an experiment')
    name = str(outside) if name == 'ABSOLUTE' else name
    path = write_yaml(tmp_path, model_options('SRModel', sr_data, demo_data, name))
    assert run_in_process(['-opt', path]) == 2
    assert problem in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ['opt.yml', 'outside'] and (outside / 'keep.txt').exists()


def test_experiment_name_message(sr_data, demo_data, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_yaml(tmp_path, model_options('SRModel', sr_data, demo_data, '../../escaped'))
    assert run_in_process(['-opt', path]) == 2
    assert "name: '../../escaped' must be a plain folder name (no /, \\ or ..)" in capsys.readouterr().err


def test_lock_is_keyed_on_the_real_folder(tmp_path):
    from uiqa_plugin.runner import ExperimentInUseError, ExperimentLock
    (tmp_path / 'lk').mkdir()
    os.symlink(tmp_path / 'lk', tmp_path / 'alias')
    lock = ExperimentLock(str(tmp_path), 'lk').acquire()
    try:
        with pytest.raises(ExperimentInUseError, match="experiment 'alias' is in use"):
            ExperimentLock(str(tmp_path), 'alias').acquire()
        with pytest.raises(ExperimentInUseError):
            ExperimentLock(str(tmp_path) + '/.', 'lk').acquire()
    finally:
        lock.release()


def test_cuda_prefetcher_needs_pinned_memory():
    from uiqa_plugin.option_error import OptionError
    from uiqa_plugin.runner.loop import check_prefetch_mode
    with pytest.raises(OptionError, match='prefetch_mode: cuda needs datasets.train.pin_memory: true'):
        check_prefetch_mode({'prefetch_mode': 'cuda'})
    assert check_prefetch_mode({'prefetch_mode': 'cuda', 'pin_memory': True}) == 'cuda'
    assert check_prefetch_mode({}) is None


def test_ddp_on_the_cpu_for_basicsr_models(monkeypatch):
    """BaseModel.model_to_device passes CUDA device ids to DDP; patched, the CPU gets none."""
    import basicsr.models.base_model as base_model
    from uiqa_plugin.runner import basicsr_patches
    calls = []
    monkeypatch.setattr(basicsr_patches, 'DistributedDataParallel', lambda net, **kw: calls.append(kw) or net)
    monkeypatch.setattr(base_model.BaseModel, 'model_to_device', base_model.BaseModel.model_to_device)
    basicsr_patches.patch_basicsr()
    model = base_model.BaseModel.__new__(base_model.BaseModel)
    model.opt, model.device = {'dist': True, 'num_gpu': 0}, torch.device('cpu')
    model.model_to_device(torch.nn.Linear(2, 2))
    assert calls == [{'device_ids': None, 'find_unused_parameters': False}]
