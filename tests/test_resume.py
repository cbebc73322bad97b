"""Interrupted training resumes exactly: a run killed at any iteration (or inside a save) and
continued with --auto_resume ends bit-identical (CPU) to the uninterrupted run, the best
checkpoint and its record included; unreadable latest states are skipped and named."""
import os
import re

import pytest
import torch

from helpers import demo_options, load_weights as load, run_train, write_yaml


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
    # The optimizer and the schedule continue, not restart: AdamW's step count, the scheduler and the logged
    # learning rates after iteration 20 are those of the uninterrupted run.
    # (the model's own state, BasicSR's <iter>.state, beside the loop's <iter>.loop.pth)
    state, ref_state = (load(e / 'training_states' / '30.state') for e in (exp, ref_exp))
    steps = lambda s: {int(v['step']) for v in s['optimizers'][0]['state'].values()}  # noqa: E731
    assert steps(state) == steps(ref_state) == {30}
    assert state['schedulers'] == ref_state['schedulers']
    lrs = lambda text: re.findall(r'iter:\s+(\d+), lr:\(([0-9.e+-]+),\)', text)  # noqa: E731
    assert lrs(log) and lrs(log) == [(i, lr) for i, lr in lrs(ref_log) if int(i) > 20]


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
