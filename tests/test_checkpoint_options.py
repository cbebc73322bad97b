"""A checkpoint's stored options are checked by the same rules as an option file, before a model is built:
one message naming the file and the key, never a traceback (issue 16 #8)."""
import pytest
import torch

from uiqa_plugin.api import load_trained_model
from uiqa_plugin.options import OptionError
from uiqa_plugin.tools.score import main as score_main

VIEWS = {'image': {}, 'fragments': {'grid': 2, 'patch': 16}, 'salient': {'size': 32}}


def with_changes(ckpt, change):
    ckpt = dict(ckpt, network_g=dict(ckpt['network_g']))
    for key, value in change.items():
        if key.startswith('network_g.'):
            ckpt['network_g'][key.split('.', 1)[1]] = value
        else:
            ckpt[key] = value
    return ckpt


CASES = [
    ({'network_g.colour': 3}, "network_g.colour: CLIPUIQA has no option 'colour'"),
    ({'network_g': 7}, 'network_g: expected a mapping {type: ARCH, ...}, got 7'),
    ({'network_g': ['CLIPUIQA']}, "network_g: expected a mapping {type: ARCH, ...}, got ['CLIPUIQA']"),
    ({'network_g.prompt_opt': {'n_ctx': -5}}, 'network_g.prompt_opt.n_ctx: -5 is out of range: expected a whole '
                                              'number >= 1 and <= 72'),
    ({'network_g.prompt_opt': {'n_ctx': 1e9}}, 'network_g.prompt_opt.n_ctx: expected a whole number, got 1000000000.0'),
    ({'network_g.aggregation': 'maen'}, "network_g.aggregation: 'maen' is not one of 'mean', 'concat', 'learned', "
                                        "'attention' (did you mean 'mean'?)"),
    ({'view_options': {'fragments': {'grid': 2000, 'patch': 16}}},
     'view_options.views.fragments.grid: 2000 is out of range: expected a whole number >= 1 and <= 64'),
    ({'preprocessing': {'resize': {'size': [60000, 60000]}}},
     'preprocessing.resize.size: 60000 is out of range: expected a whole number >= 1 and <= 4096'),
    ({'preprocessing': {'transforms': [{'type': 'LoadImage'}, {'type': 'Sharpen'}]}},
     "preprocessing.transforms[1].type: unknown transform 'Sharpen'"),
]


@pytest.mark.parametrize('change, expected', CASES, ids=[c[1].split(':')[0] for c in CASES])
def test_bad_stored_options_are_named(change, expected, uiqa_checkpoint_factory, tmp_path, capsys):
    path, _ = uiqa_checkpoint_factory(VIEWS)
    ckpt = torch.load(path, weights_only=True)
    bad = tmp_path / 'bad.pth'
    torch.save(with_changes(ckpt, change), bad)
    with pytest.raises(OptionError) as info:
        load_trained_model(str(bad), device='cpu')
    assert str(info.value).startswith(f'{bad}: the options stored in this checkpoint have 1 problem(s):')
    assert str(info.value).splitlines()[1].startswith(f'  - {expected}'), str(info.value)
    image = tmp_path / 'im.png'
    from PIL import Image
    Image.new('RGB', (64, 48), (90, 120, 30)).save(image)
    assert score_main([str(image), '--checkpoint', str(bad), '--device', 'cpu', '--no-progress']) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and expected in err and 'Traceback' not in err


def test_network_g_without_type_says_which_key(uiqa_checkpoint_factory, tmp_path, capsys):
    path, _ = uiqa_checkpoint_factory(VIEWS)
    ckpt = torch.load(path, weights_only=True)
    del ckpt['network_g']['type']
    bad = tmp_path / 'notype.pth'
    torch.save(ckpt, bad)
    image = tmp_path / 'im.png'
    from PIL import Image
    Image.new('RGB', (64, 48)).save(image)
    assert score_main([str(image), '--checkpoint', str(bad), '--device', 'cpu', '--no-progress']) == 2
    err = capsys.readouterr().err.strip()
    assert err != 'uiqa-score: type'
    assert f'{bad}: the options stored in this checkpoint have 1 problem(s)' in err
    assert 'network_g.type: required (the arch, e.g. CLIPUIQA)' in err


def test_good_stored_options_still_load(uiqa_checkpoint_factory):
    path, _ = uiqa_checkpoint_factory(VIEWS)
    model = load_trained_model(path, device='cpu')
    assert model.views == ['image', 'fragments', 'salient']
