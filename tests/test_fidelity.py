"""Fidelity (issue 8): the same weights give the same scores however they arrive; fine-tuning
one model never changes another; fixed prompts train with a fine-tuned text tower; the shared
CLIP table is built once under threads; loading says what it loaded."""
import logging
import threading
import time
import warnings

import pytest
import torch

from basicsr.utils.registry import ARCH_REGISTRY
from helpers import write_random_image
from uiqa_plugin.clip import factory, pretrained
from uiqa_plugin.api import create_metric, load_trained_model
from uiqa_plugin.clip import clear_shared_clip, load_clip, resolve_quick_gelu


@pytest.fixture
def fresh_clip_table():
    clear_shared_clip()
    yield
    clear_shared_clip()


# ----------------------------------------------------------------------------- QuickGELU (8.1)

@pytest.fixture(scope='module')
def rn50_like_files(tmp_path_factory):
    """One tiny random CLIP with QuickGELU saved three ways: TorchScript, OpenAI state dict, open_clip checkpoint.

    Its JSON config does not declare the activation, as open_clip's 'RN50' does not: the
    tests register it as a model all of whose published weights use QuickGELU, like RN50.
    """
    import open_clip
    from tiny_clip import TINY_RN_CONFIG, write_config
    folder = tmp_path_factory.mktemp('rn50_like')
    config = write_config(folder, 'rn50_like', TINY_RN_CONFIG)
    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = open_clip.create_model(factory.resolve_model_config(config), pretrained=None,
                                       force_quick_gelu=True)
        torch.jit.script(model).save(str(folder / 'scripted.pt'))
    state = model.state_dict()
    torch.save({**state, 'input_resolution': torch.tensor(64), 'context_length': torch.tensor(77),
                'vocab_size': torch.tensor(49408)}, folder / 'openai.pt')
    torch.save({'epoch': 1, 'state_dict': {'module.' + k: v for k, v in state.items()}}, folder / 'openclip.pt')
    return {'config': config, 'torchscript': str(folder / 'scripted.pt'), 'openai': str(folder / 'openai.pt'),
            'openclip': str(folder / 'openclip.pt')}


@pytest.fixture
def rn50_like(monkeypatch, rn50_like_files, fresh_clip_table):
    original = pretrained.tag_activations
    monkeypatch.setattr(pretrained, 'tag_activations', lambda name: (
        {'openai': True, 'yfcc15m': True, 'cc12m': True} if name.startswith('rn50_like') else original(name)))
    return rn50_like_files


def test_the_same_weights_score_the_same_from_every_container(rn50_like):
    images = torch.rand(3, 3, 64, 80)
    ctx = torch.randn(1, 16, 32) * 0.02
    zero_shot, plus = {}, {}
    for fmt in ('torchscript', 'openai', 'openclip'):
        metric = create_metric('quality,sharpness', clip_model=rn50_like['config'], clip_pretrained=rn50_like[fmt],
                               device='cpu')
        net = ARCH_REGISTRY.get('CLIPIQAPlus')(clip_model=rn50_like['config'], clip_pretrained=rn50_like[fmt],
                                               input_normalized=False).eval()
        net.load_state_dict({'prompt_learner.ctx': ctx})
        assert metric.clip.quick_gelu is True and net.clip.quick_gelu is True
        with torch.no_grad():
            zero_shot[fmt], plus[fmt] = metric(images), net(images)
    for fmt in ('openai', 'openclip'):
        assert torch.equal(zero_shot[fmt], zero_shot['torchscript'])
        assert torch.equal(plus[fmt], plus['torchscript'])
    # The activation matters for these weights: GELU gives other scores.
    gelu = create_metric('quality,sharpness', clip_model=rn50_like['config'], clip_pretrained=rn50_like['openai'],
                         quick_gelu=False, device='cpu')
    with torch.no_grad():
        assert (gelu(images) - zero_shot['openai']).abs().max() > 1e-5


def test_quick_gelu_rule_on_open_clip_names():
    on, reason = resolve_quick_gelu('RN50')
    assert on and 'every published RN50 weight set' in reason and 'openai' in reason
    assert resolve_quick_gelu('RN101')[0] and resolve_quick_gelu('RN50x4')[0]
    on, reason = resolve_quick_gelu('ViT-B-32')  # OpenAI's and LAION's weights: a state dict cannot tell
    assert not on and 'quick_gelu=True' in reason and 'openai' in reason
    assert resolve_quick_gelu('ViT-B-32', tag='openai')[0] is True
    assert resolve_quick_gelu('ViT-B-32', tag='laion2b_s34b_b79k')[0] is False
    assert resolve_quick_gelu('RN50-quickgelu')[0] is True
    assert resolve_quick_gelu('RN50', quick_gelu=False) == (False, 'set by the quick_gelu option')
    assert resolve_quick_gelu('ViT-B-32', recorded=True)[0] is True  # what a TorchScript archive was scripted with


def test_forcing_gelu_off_for_a_config_that_sets_quick_gelu(tmp_path, fresh_clip_table):
    from tiny_clip import TINY_RN_CONFIG, write_config
    config = write_config(tmp_path, 'declares', dict(TINY_RN_CONFIG, quick_gelu=True))
    from open_clip.transformer import QuickGELU

    def activations(clip):
        return {type(m).__name__ for m in clip.model.modules() if isinstance(m, (QuickGELU, torch.nn.GELU))}
    with pytest.warns(UserWarning, match='RANDOM'):
        assert activations(load_clip(config, None)) == {'QuickGELU'}
    with pytest.warns(UserWarning, match='RANDOM'):
        assert activations(load_clip(config, None, quick_gelu=False)) == {'GELU'}


def test_the_choice_and_the_source_are_logged_without_open_clips_random_init_warning(rn50_like, caplog, monkeypatch):
    # BasicSR's get_root_logger (called by any earlier in-process run) stops 'basicsr' records from propagating
    monkeypatch.setattr(logging.getLogger('basicsr'), 'propagate', True)
    with caplog.at_level(logging.INFO):
        load_clip(rn50_like['config'], rn50_like['openai'])
    text = caplog.text
    assert 'QuickGELU: on (every published rn50_like' in text
    assert f'weights from {rn50_like["openai"]} (OpenAI-format state dict)' in text
    assert 'No pretrained weights loaded' not in text and 'initialized randomly' not in text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        load_clip(rn50_like['config'], rn50_like['openclip'], quick_gelu=False)
    assert 'QuickGELU: off (set by the quick_gelu option)' in caplog.text and '(open_clip checkpoint)' in caplog.text


def test_cli_quick_gelu_flags(rn50_like, tmp_path, capsys):
    import numpy as np

    from uiqa_plugin.tools.score import main as score_main
    write_random_image(tmp_path / 'a.png', (48, 64, 3), np.random.default_rng(0))
    rows = {}
    for flag in ('--quick-gelu', '--no-quick-gelu'):
        out = tmp_path / f'{flag}.csv'
        assert score_main([str(tmp_path / 'a.png'), '--clip-model', rn50_like['config'], '--clip-pretrained',
                           rn50_like['openai'], '--device', 'cpu', '--no-progress', flag, '--out', str(out)]) == 0
        rows[flag] = float(out.read_text().splitlines()[1].split(',')[1])
    metric = create_metric('quality', clip_model=rn50_like['config'], clip_pretrained=rn50_like['openai'],
                           device='cpu', quick_gelu=False)
    from uiqa_plugin.api import score_paths
    expected = score_paths(metric, [str(tmp_path / 'a.png')], progress=False).rows[0]['quality']
    assert rows['--no-quick-gelu'] == pytest.approx(expected, abs=1e-6)
    assert rows['--quick-gelu'] != pytest.approx(expected, abs=1e-6)


def test_checkpoints_record_the_resolved_activation(rn50_like, tmp_path):
    from uiqa_plugin.models.iqa_model import IQAModel
    options = {'type': 'CLIPIQAPlus', 'clip_model': rn50_like['config'], 'clip_pretrained': rn50_like['openai']}
    opt = {'name': 't', 'model_type': 'IQAModel', 'num_gpu': 0, 'is_train': False, 'dist': False, 'rank': 0,
           'network_g': dict(options), 'path': {'models': str(tmp_path)}, 'datasets': {}}
    model = IQAModel(opt)
    model.save_network(model.net_g, 'net_g', 7)
    saved = torch.load(tmp_path / 'net_g_7.pth', weights_only=True)
    assert saved['network_g']['quick_gelu'] is True and 'quick_gelu' not in opt['network_g']
    # Reloaded over weights whose rule would say otherwise (a GELU-scripted archive), it keeps QuickGELU.
    reloaded = load_trained_model(str(tmp_path / 'net_g_7.pth'), device='cpu')
    assert reloaded.clip.quick_gelu is True
    assert load_trained_model(str(tmp_path / 'net_g_7.pth'), device='cpu', quick_gelu=False).clip.quick_gelu is False


# ----------------------------------------------------------------------------- copy-on-unfreeze (8.2, 8.3)

def _uiqa(clip_files, **kwargs):
    return ARCH_REGISTRY.get('CLIPUIQA')(views=['image'], clip_model=clip_files['config'],
                                         clip_pretrained=clip_files['openai'], **kwargs)


def test_fine_tuning_never_changes_the_shared_clip(tiny_clip_files, fresh_clip_table, tmp_path):
    images = torch.rand(2, 3, 64, 80)
    zero_shot = create_metric('quality,happy', clip_model=tiny_clip_files['config'],
                              clip_pretrained=tiny_clip_files['openai'], device='cpu')
    shared = zero_shot.clip
    with torch.no_grad():
        before = zero_shot(images)
    weights_before = {k: v.clone() for k, v in shared.model.state_dict().items()}
    text_before = shared.text_features(zero_shot.prompts).clone()

    torch.manual_seed(0)
    tuned = _uiqa(tiny_clip_files, attributes='quality', finetune_clip=['visual.layer4', 'transformer'])
    assert tuned.clip is not shared and tuned.prompt_learner.clip is tuned.clip
    optimizer = torch.optim.SGD([p for p in tuned.parameters() if p.requires_grad], lr=0.5)
    tuned.train()
    for _ in range(3):
        optimizer.zero_grad()
        ((tuned(images) - 1.0) ** 2).mean().backward()
        optimizer.step()
    path = tmp_path / 'tuned.pth'
    torch.save(tuned.state_dict(), path)
    reloaded = _uiqa(tiny_clip_files, attributes='quality', finetune_clip=['visual.layer4', 'transformer'])
    reloaded.load_state_dict(torch.load(path, weights_only=True))
    # The fine-tuned copies really changed ...
    tuned_weights = reloaded.clip.model.state_dict()
    for key in ('visual.layer4.0.downsample.0.weight', 'transformer.resblocks.0.mlp.c_fc.weight'):
        assert not torch.equal(tuned_weights[key], weights_before[key]), key
    # ... and the shared instance did not: weights, flags, cached text, scores.
    assert not any(p.requires_grad for p in shared.parameters())
    for k, v in shared.model.state_dict().items():
        assert torch.equal(v, weights_before[k]), k
    assert torch.equal(shared.text_features(zero_shot.prompts), text_before)
    later = create_metric('quality,happy', clip_model=tiny_clip_files['config'],
                          clip_pretrained=tiny_clip_files['openai'], device='cpu')
    assert later.clip is shared
    with torch.no_grad():
        assert torch.equal(zero_shot(images), before) and torch.equal(later(images), before)
    with pytest.raises(RuntimeError, match='private_copy'):
        shared.unfreeze(['visual.layer4'])


def test_fixed_prompts_train_with_a_fine_tuned_text_tower(tiny_clip_files, fresh_clip_table):
    torch.manual_seed(1)
    net = _uiqa(tiny_clip_files, attributes='quality,sharpness', prompt='fixed', finetune_clip=['transformer'])
    net.train()
    images = torch.rand(2, 3, 64, 64)
    net(images).sum().backward()
    text_params = dict(net.clip.model.transformer.named_parameters())
    assert text_params and all(p.grad is not None for p in text_params.values())
    assert sum(p.grad.abs().sum() for p in text_params.values()) > 0
    # Without gradients the fixed-prompt features follow the trained tower (no stale cache).
    net.eval()
    with torch.no_grad():
        first = net.text_features().clone()
        assert net.text_features() is net.text_features()  # cached while nothing changes
        next(iter(text_params.values())).add_(0.5)
        assert not torch.allclose(net.text_features(), first)


# ----------------------------------------------------------------------------- shared table under threads (8.8)

def test_concurrent_first_loads_build_one_clip(tiny_clip_files, fresh_clip_table, monkeypatch):
    built = []
    real = factory.build_clip_model

    def slow_build(*args, **kwargs):
        built.append(threading.get_ident())
        time.sleep(0.2)  # widen the check-then-set window
        return real(*args, **kwargs)
    monkeypatch.setattr(factory, 'build_clip_model', slow_build)
    results = []

    def worker():
        results.append(load_clip(tiny_clip_files['config'], tiny_clip_files['openai']))
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and len(results) == 4 and all(r is results[0] for r in results)


def test_loading_clip_leaves_the_global_rng_alone(tiny_clip_files, fresh_clip_table):
    # The entry points load CLIP before BasicSR seeds and builds the model: a learned context's
    # random init must not depend on whether CLIP was loaded before or during the build.
    torch.manual_seed(0)
    load_clip(tiny_clip_files['config'], tiny_clip_files['openai'])
    after_load = torch.rand(4)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(4), after_load)


# ----------------------------------------------------------------------------- failing before folders exist (12.3)

def test_train_entry_point_checks_clip_before_basicsr_creates_folders(monkeypatch, capsys):
    from uiqa_plugin.runner import command_line as runner
    opt = {'network_g': {'type': 'CLIPIQAPlus', 'clip_model': 'RN50', 'clip_pretrained': 'openai'}}
    monkeypatch.setattr(runner, 'check_options', lambda argv, is_train=True: (opt, None))
    monkeypatch.setattr(pretrained, 'cached_pretrained_file', lambda *a, **k: None)
    monkeypatch.setattr(runner, 'train_pipeline', lambda root: pytest.fail('must stop before training'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(SystemExit) as exit_info:
        runner.run_pipeline(True, ['-opt', 'x.yml'])
    assert exit_info.value.code == 2
    message = capsys.readouterr().err
    assert 'HF_HUB_OFFLINE' in message and 'Pass a local weight file as network_g.clip_pretrained' in message
