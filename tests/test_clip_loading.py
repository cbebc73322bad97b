"""Loading CLIP weights the way users have them, and the errors when that fails."""

import pytest
import torch

from uiqa_plugin.api import create_metric
from uiqa_plugin.clip import ClipLoadError, build_clip_model, load_clip


def scores(config, weights, images):
    metric = create_metric('quality,happy', clip_model=config, clip_pretrained=weights, device='cpu')
    with torch.no_grad():
        return metric(images)


def test_openai_state_dict_torchscript_and_open_clip_checkpoint_give_identical_scores(tiny_clip_files):
    images = torch.rand(2, 3, 64, 96)
    from_openai = scores(tiny_clip_files['config'], tiny_clip_files['openai'], images)
    from_openclip = scores(tiny_clip_files['config'], tiny_clip_files['openclip'], images)
    from_script = scores(tiny_clip_files['config'], tiny_clip_files['torchscript'], images)
    assert torch.equal(from_openai, from_openclip) and torch.equal(from_openai, from_script)
    scripted = load_clip(tiny_clip_files['config'], tiny_clip_files['torchscript'])
    plain = load_clip(tiny_clip_files['config'], tiny_clip_files['openai'])
    for (k, a), (k2, b) in zip(scripted.model.state_dict().items(), plain.model.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert scripted.quick_gelu is False and plain.quick_gelu is False  # the archive was scripted with GELU
    # Forcing QuickGELU changes the text tower, hence the scores: the option really reaches the model.
    quick = create_metric('quality,happy', clip_model=tiny_clip_files['config'],
                          clip_pretrained=tiny_clip_files['openai'], quick_gelu=True, device='cpu')
    with torch.no_grad():
        assert not torch.allclose(from_openai, quick(images), atol=1e-6)


def test_random_weights_warn():
    with pytest.warns(UserWarning, match='RANDOM weights'):
        build_clip_model('RN50', None)


def test_corrupt_file_names_the_file(tmp_path, tiny_clip_files):
    bad = tmp_path / 'broken.pt'
    with open(tiny_clip_files['openai'], 'rb') as f:
        bad.write_bytes(f.read()[:5000])  # truncated download
    with pytest.raises(ClipLoadError, match=r'broken\.pt.*corrupt'):
        build_clip_model(tiny_clip_files['config'], str(bad))
    text = tmp_path / 'notes.pt'
    text.write_text('not weights')
    with pytest.raises(ClipLoadError, match='notes.pt'):
        build_clip_model(tiny_clip_files['config'], str(text))


def test_weights_of_another_architecture_are_refused(tmp_path, tiny_clip_files):
    with pytest.raises(ClipLoadError, match=r'do not fit the architecture.*shape mismatch'):
        build_clip_model(tiny_clip_files['vit_config'], tiny_clip_files['openai'])
    partial = tmp_path / 'partial.pt'
    state = torch.load(tiny_clip_files['openai'])
    state.pop('ln_final.weight')
    torch.save(state, partial)
    with pytest.raises(ClipLoadError, match=r'missing: ln_final.weight'):
        build_clip_model(tiny_clip_files['config'], str(partial))


def test_missing_file_and_unknown_names():
    with pytest.raises(ClipLoadError, match='file not found'):
        build_clip_model('RN50', '/nowhere/RN50.pt')
    with pytest.raises(ClipLoadError, match=r"unknown CLIP model 'RN5O'.*RN50"):
        build_clip_model('RN5O', None)
    with pytest.raises(ClipLoadError, match='neither a local file nor a known pretrained tag'):
        build_clip_model('RN50', 'openaii')


def test_failed_download_says_how_to_pass_a_local_file(monkeypatch):
    import open_clip
    from uiqa_plugin.clip import pretrained
    from uiqa_plugin.clip import CLI_OPTION_NAMES, yaml_option_names

    def offline(*args, **kwargs):
        if kwargs.get('pretrained'):
            raise OSError('Network is unreachable')
        raise AssertionError('should download')
    monkeypatch.setattr(open_clip, 'create_model', offline)
    monkeypatch.setattr(pretrained, 'cached_pretrained_file', lambda *a, **k: None)
    monkeypatch.setattr(pretrained, 'reachable', lambda host, timeout=3.0: True)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    with pytest.raises(ClipLoadError, match='could not be downloaded') as info:
        build_clip_model('RN50', 'openai')
    # The hint names the option the way the user writes it.
    assert 'Pass a local weight file as --clip-pretrained' in info.value.message(CLI_OPTION_NAMES)
    assert 'Pass a local weight file as network_g.clip_pretrained' in info.value.message(yaml_option_names())


def test_offline_fails_at_once_without_touching_the_network(monkeypatch):
    import time

    import open_clip
    from uiqa_plugin.clip import pretrained
    monkeypatch.setattr(pretrained, 'cached_pretrained_file', lambda *a, **k: None)
    monkeypatch.setattr(open_clip, 'create_model', lambda *a, **k: pytest.fail('must not try to download'))
    monkeypatch.setattr(pretrained, 'reachable', lambda *a, **k: pytest.fail('must not probe the network'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    start = time.monotonic()
    with pytest.raises(ClipLoadError, match='not in the download cache and HF_HUB_OFFLINE is set'):
        build_clip_model('RN50', 'openai')
    assert time.monotonic() - start < 5
    # Online mode but no route to the host: one quick probe, then the same plain error.
    monkeypatch.delenv('HF_HUB_OFFLINE')
    monkeypatch.setattr(pretrained, 'reachable', lambda host, timeout=3.0: False)
    with pytest.raises(ClipLoadError, match='huggingface.co cannot be reached'):
        build_clip_model('RN50', 'openai')


def test_a_cached_tag_loads_from_its_file_without_network(monkeypatch, tmp_path):
    import open_clip
    from uiqa_plugin.clip import pretrained
    seen = {}
    monkeypatch.setattr(pretrained, 'cached_pretrained_file', lambda *a, **k: str(tmp_path / 'cached.bin'))
    monkeypatch.setattr(pretrained, 'reachable', lambda *a, **k: pytest.fail('must not probe the network'))
    monkeypatch.setattr(open_clip, 'create_model', lambda name, **kw: seen.update(kw) or 'model')
    model, info = build_clip_model('RN50', 'openai')
    assert seen['pretrained'] == str(tmp_path / 'cached.bin') and info['source'] == seen['pretrained']


def test_openai_tag_uses_quick_gelu(monkeypatch):
    import open_clip
    from uiqa_plugin.clip import pretrained
    seen = {}
    monkeypatch.setattr(pretrained, 'cached_pretrained_file', lambda *a, **k: None)
    monkeypatch.setattr(pretrained, 'reachable', lambda host, timeout=3.0: True)
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(open_clip, 'create_model', lambda name, **kw: seen.update(kw) or 'model')
    build_clip_model('RN50', 'openai')
    assert seen['force_quick_gelu'] is True and seen['pretrained'] == 'openai'
