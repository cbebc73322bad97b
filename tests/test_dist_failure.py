"""Runs that fail end cleanly: one failing rank of a 2-process CPU run stops every process with
that rank's error (no hang), an option error under torchrun is one message, a second live run
of the same experiment is refused, an unwritable models folder or a full disk is named with how
to resume, Ctrl-C says how to resume."""
import glob
import os
import re
import subprocess
import sys
import time

import pytest

from helpers import REPO, TRAIN_PY, demo_options, free_port, run_train, spawn, write_yaml

pytestmark = pytest.mark.slow  # torchrun and training subprocesses

TORCHRUN = ('-m', 'torch.distributed.run', '--nproc_per_node=2')


def small_options(demo_data, name, **changes):
    settings = {'train.total_iter': 6, 'val.val_freq': 1000, 'logger.print_freq': 1,
                'logger.save_checkpoint_freq': 3, 'name': name, 'val.pbar': False}
    settings.update(changes)
    opt = demo_options(demo_data, **settings)
    opt['datasets']['train']['batch_size_per_gpu'] = 4
    return opt


@pytest.mark.slow
def test_one_failing_rank_stops_all_processes_with_its_error(demo_data, tmp_path):
    path = write_yaml(tmp_path, small_options(demo_data, 'dist_fail'))
    start = time.time()
    out = run_train(tmp_path, path, env={'UIQA_FAIL_AT': '3', 'UIQA_FAIL_RANK': '1', 'PYTHONWARNINGS': 'default'},
                    check=False,
                    launcher=TORCHRUN + (f'--master_port={free_port()}',), timeout=240)
    log = out.stdout + out.stderr
    assert out.returncode != 0
    assert time.time() - start < 90  # the other rank stops too (about 10 s here), not at the 240 s timeout
    assert 'RuntimeError: injected failure on rank 1 at iteration 3' in log
    # torchrun's summary names the failing rank and its error (``record``), not "To enable traceback".
    assert 'rank      : 1' in log and 'To enable traceback' not in log.split('Root Cause')[-1]
    assert 'broadcast_buffers' not in log  # torch >= 2.13 warned once per rank for broadcast_buffers=False


@pytest.mark.slow
def test_option_error_under_torchrun_is_one_message(demo_data, tmp_path):
    opt = small_options(demo_data, 'dist_bad')
    opt['train']['totl_iter'] = 5
    out = spawn([sys.executable, *TORCHRUN, f'--master_port={free_port()}', TRAIN_PY, '-opt',
                 write_yaml(tmp_path, opt)],
                tmp_path, timeout=240)
    assert out.returncode != 0
    message = "train.totl_iter: unknown key (did you mean 'total_iter'?)"
    # Once, as the root cause of torchrun's summary (rank 0's error file); the other rank meets the
    # same error and leaves the report to rank 0, so there is no second copy.
    assert out.stderr.count(message) == 1, out.stderr[-3000:]
    assert message in out.stderr.split('Root Cause')[-1] and 'To enable traceback' not in out.stderr
    assert not (tmp_path / 'experiments').exists()


@pytest.mark.slow
def test_second_live_run_of_an_experiment_is_refused_and_a_dead_ones_lock_taken_over(demo_data, tmp_path):
    from uiqa_plugin.runner import ExperimentLock
    path = write_yaml(tmp_path, small_options(demo_data, 'locked'))
    (tmp_path / 'experiments' / 'locked').mkdir(parents=True)
    (tmp_path / 'experiments' / 'locked' / 'keep.txt').write_text('the live run writes here')
    holder = subprocess.Popen([sys.executable, '-c', (
        'import sys, time; sys.path.insert(0, sys.argv[1]); from uiqa_plugin.runner import ExperimentLock; '
        'lock = ExperimentLock(sys.argv[2], "locked").acquire(); print("locked", flush=True); time.sleep(120)'),
        REPO, str(tmp_path / 'experiments')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == 'locked'
        out = run_train(tmp_path, path, check=False)
        assert out.returncode != 0 and 'Traceback' not in out.stderr
        assert f"experiment 'locked' is in use by a running training (pid {holder.pid} on" in out.stderr
        assert sorted(os.listdir(tmp_path / 'experiments')) == ['.locked.lock', 'locked']  # nothing archived
        assert (tmp_path / 'experiments' / 'locked' / 'keep.txt').exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing anything: its lock file remains, and the next run takes it over.
    assert (tmp_path / 'experiments' / '.locked.lock').read_text().startswith(f'pid {holder.pid}')
    run_train(tmp_path, path)
    lock = ExperimentLock(str(tmp_path / 'experiments'), 'locked').acquire()  # released at the end of the run
    lock.release()


@pytest.mark.slow
def test_unwritable_models_folder_names_the_file(demo_data, tmp_path):
    path = write_yaml(tmp_path, small_options(demo_data, 'readonly'))
    out = run_train(tmp_path, path, env={'UIQA_READONLY': 'models'}, check=False)
    assert out.returncode != 0 and 'Traceback' not in out.stderr, out.stderr[-3000:]
    models = tmp_path / 'experiments' / 'readonly' / 'models'
    assert f'error: cannot write the network file {models}/net_g_3.pth: Read-only file system' in out.stderr


@pytest.mark.slow
def test_full_disk_names_the_folder_and_how_to_resume(demo_data, tmp_path):
    path = write_yaml(tmp_path, small_options(demo_data, 'full'))
    out = run_train(tmp_path, path, env={'UIQA_DISK_FULL': 'net_g_6'}, check=False)  # torch.save's RuntimeError
    assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
    models = tmp_path / 'experiments' / 'full' / 'models'
    assert (f'error: cannot write the network file {models}/net_g_6.pth: [enforce fail at inline_container.cc:783] . '
            f'PytorchStreamWriter failed writing file data/0: file write failed (is {models} writable, is the disk '
            'full?) (the checkpoints saved so far are intact; resume with: python ') in out.stderr
    assert f'-opt {path} --auto_resume)' in out.stderr
    assert sorted(os.listdir(models)) == ['net_g_3.pth']  # the finished one is intact, no temporary file left
    resumed = run_train(tmp_path, path, '--auto_resume')
    assert 'Resuming training from epoch: 0, iter: 3.' in resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume(demo_data, tmp_path):
    path = write_yaml(tmp_path, small_options(demo_data, 'stopped'))
    out = run_train(tmp_path, path, env={'UIQA_INTERRUPT_AT': '5'}, check=False)
    assert out.returncode == 130 and 'Traceback' not in out.stderr and 'KeyboardInterrupt' not in out.stderr
    assert 'interrupted (Ctrl-C). The checkpoints saved so far are intact; resume with: python ' in out.stderr
    assert f'-opt {path} --auto_resume' in out.stderr
    # The CLIP loaded before the log file existed is logged as loaded, not as "already loaded".
    log = open(glob.glob(str(tmp_path / 'experiments' / 'stopped' / 'train_stopped_*.log'))[0]).read()
    clip_lines = re.findall(r'(Loaded|Using the already loaded) CLIP', log)
    assert clip_lines and clip_lines[0] == 'Loaded', clip_lines
