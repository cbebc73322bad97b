"""No code runs from a weight file: a pickle payload planted in every file the training, test
and scoring paths read is refused with a message that names the file and the override."""
import os
import os.path as osp
import sys

import pytest
import torch

from helpers import REPO, demo_options, spawn, write_yaml


class Payload:
    """Unpickling this runs ``touch marker``: what a malicious .pth does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def plant(path, marker, **content):
    torch.save({**content, 'extra': Payload(marker)}, str(path))
    return str(path)


def run_script(script, args, cwd):
    """CompletedProcess of uiqa_plugin/<script> with ``args``, expected to fail."""
    return spawn([sys.executable, osp.join(REPO, 'uiqa_plugin', script), *args], cwd, timeout=300)


def assert_refused(out, path, marker):
    assert out.returncode != 0
    assert not osp.exists(marker), 'the payload ran'
    assert 'Traceback' not in out.stderr, out.stderr[-3000:]
    assert f'{path}: refused, it holds Python objects' in out.stderr, out.stderr[-3000:]
    assert '--trust-checkpoint' in out.stderr and 'path.trust_checkpoint' in out.stderr


def short_options(demo_data, name):
    opt = demo_options(demo_data, **{'train.total_iter': 2, 'val.val_freq': 1000, 'logger.print_freq': 1,
                                     'logger.save_checkpoint_freq': 1000, 'name': name})
    opt['datasets']['train']['batch_size_per_gpu'] = 4
    return opt


@pytest.mark.slow
def test_resume_state_and_auto_resume_refuse_a_payload(demo_data, tmp_path):
    marker = str(tmp_path / 'ran')
    state = plant(tmp_path / 'evil.state', marker, iter=5, epoch=0, optimizers=[], schedulers=[])
    opt = short_options(demo_data, 'evil_resume')
    opt['path']['resume_state'] = state
    assert_refused(run_script('train.py', ['-opt', write_yaml(tmp_path, opt, 'a.yml')], tmp_path), state, marker)

    opt = short_options(demo_data, 'evil_auto')
    states = tmp_path / 'experiments' / 'evil_auto' / 'training_states'
    states.mkdir(parents=True)
    planted = plant(states / '99.state', marker, iter=99, epoch=3, optimizers=[], schedulers=[])
    out = run_script('train.py', ['-opt', write_yaml(tmp_path, opt, 'b.yml'), '--auto_resume'], tmp_path)
    assert_refused(out, planted, marker)
    assert not any('_archived_' in n for n in os.listdir(tmp_path / 'experiments'))  # nothing renamed away


@pytest.mark.slow
def test_pretrain_network_refuses_a_payload_in_training_and_test(demo_data, tmp_path):
    marker = str(tmp_path / 'ran')
    opt = short_options(demo_data, 'evil_pretrain')
    evil = plant(tmp_path / 'evil.pth', marker, params={}, network_g=opt['network_g'])
    opt['path']['pretrain_network_g'] = evil
    assert_refused(run_script('train.py', ['-opt', write_yaml(tmp_path, opt, 'c.yml')], tmp_path), evil, marker)

    test_opt = {'name': 'evil_test', 'model_type': 'IQAModel', 'num_gpu': 0, 'manual_seed': 0,
                'datasets': {'test': dict(opt['datasets']['val'], split='validation')},
                'path': {'pretrain_network_g': evil}, 'val': {'save_predictions': True}}
    assert_refused(run_script('test.py', ['-opt', write_yaml(tmp_path, test_opt, 'd.yml')], tmp_path), evil, marker)
    test_opt['network_g'] = opt['network_g']  # the network from the options: the weights are refused as well
    assert_refused(run_script('test.py', ['-opt', write_yaml(tmp_path, test_opt, 'e.yml')], tmp_path), evil, marker)


def test_load_trained_model_refuses_a_payload_and_trusts_on_request(tmp_path, tiny_clip_files):
    from uiqa_plugin.api import load_trained_model
    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA  # noqa: F401  (registers the arch)
    from uiqa_plugin.archs.clip_uiqa_arch import CLIPIQAPlus
    from uiqa_plugin.checkpoint_io import UnsafeCheckpointError
    marker = str(tmp_path / 'ran')
    net_opt = {'type': 'CLIPIQAPlus', 'clip_model': tiny_clip_files['config'],
               'clip_pretrained': tiny_clip_files['openai'], 'prompt_opt': {'n_ctx': 4}}
    model = CLIPIQAPlus(**{k: v for k, v in net_opt.items() if k != 'type'})
    evil = plant(tmp_path / 'evil.pth', marker, params=model.state_dict(), network_g=net_opt)
    with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth: refused.*--trust-checkpoint'):
        load_trained_model(evil, device='cpu')
    assert not osp.exists(marker)
    # trust=True is the deliberate override: a file with a harmless foreign object loads.
    import fractions
    trusted = tmp_path / 'old_format.pth'
    torch.save({'params': model.state_dict(), 'network_g': net_opt, 'meta': fractions.Fraction(1, 3)}, trusted)
    with pytest.raises(UnsafeCheckpointError):
        load_trained_model(trusted, device='cpu')
    loaded = load_trained_model(trusted, device='cpu', trust=True)
    assert torch.equal(loaded.prompt_learner.ctx, model.prompt_learner.ctx)
