"""Prompt ensembles: curated phrasings, scores equal to the mean over single phrasings, one text batch."""
import json

import pytest
import torch

import uiqa_plugin  # noqa: F401  (before basicsr)
import uiqa_plugin.perception  # noqa: F401  (registers @ensemble attributes)
from tiny_clip import TINY_RN_CONFIG, write_config
from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
from uiqa_plugin.perception.ensembles import (ENSEMBLE_PHRASINGS, load_attribute_file, split_phrasings,
                                              with_ensembles)
from uiqa_plugin.prompts import Attribute, get_attribute, list_attributes, resolve_attributes

BUILTIN = [name for name, attr in list_attributes().items()
           if attr.group in ('quality', 'look', 'feel', 'feel_extra') and name != 'quality_pyiqa']


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    return write_config(tmp_path_factory.mktemp('clip'), 'tiny_ens', TINY_RN_CONFIG)


@pytest.fixture(scope='module')
def images():
    torch.manual_seed(0)
    return torch.rand(3, 3, 64, 72)


def test_every_builtin_attribute_has_an_ensemble_starting_with_the_paper_pair():
    assert len(BUILTIN) == 17
    for name in BUILTIN:
        ens = get_attribute(f'{name}@ensemble')
        assert 3 <= len(ens.pairs) <= 5, name
        assert ens.pairs[0] == get_attribute(name).pairs[0], name
        assert len(set(ens.pairs)) == len(ens.pairs), name
    assert get_attribute('happy@ensemble').pairs[1] == ('a happy image', 'a sad image')


def test_defaults_stay_the_paper_single_pairs():
    for attr in resolve_attributes('quality,look,feel,feel_extra'):
        assert len(attr.pairs) == 1 and '@' not in attr.name
    assert get_attribute('happy').pairs == (('Happy photo.', 'Sad photo.'),)


def test_ensemble_presets():
    assert [a.name for a in resolve_attributes('feel@ensemble')] == [
        'aesthetic@ensemble', 'happy@ensemble', 'natural@ensemble', 'new@ensemble', 'scary@ensemble',
        'complex@ensemble']
    assert len(resolve_attributes('ensemble')) == len(ENSEMBLE_PHRASINGS) == 17
    assert [a.name for a in with_ensembles(resolve_attributes('happy,Vivid.|Dull.'))] == ['happy@ensemble',
                                                                                          'Vivid.|Dull.']


def test_split_phrasings():
    parts = split_phrasings(get_attribute('scary@ensemble'))
    assert [p.name for p in parts] == [f'scary@ensemble[{k}]' for k in range(4)]
    assert [p.pairs[0] for p in parts] == list(get_attribute('scary@ensemble').pairs)


@pytest.mark.parametrize('mode', ['mean_prob', 'mean_logit'])
def test_ensemble_score_is_the_mean_over_single_phrasing_instances(tiny, images, mode):
    ens = CLIPIQA('happy@ensemble,scary@ensemble', clip_model=tiny, clip_pretrained=None, ensemble=mode).eval()
    with torch.no_grad():
        got = ens(images).double()
        for col, name in enumerate(['happy', 'scary']):
            singles = []
            for k, pair in enumerate(ENSEMBLE_PHRASINGS[name]):
                one = CLIPIQA([Attribute(f'{name}_{k}', (pair,))], clip_model=tiny, clip_pretrained=None).eval()
                singles.append(one(images)[:, 0].double())
            singles = torch.stack(singles, 1)  # (N, K) probabilities
            # the phrasings really disagree, so a wrong average would show
            assert (singles.max(1).values - singles.min(1).values).min() > 1e-3
            if mode == 'mean_prob':
                expected = singles.mean(1)
            else:
                expected = torch.sigmoid(torch.logit(singles).mean(1))
            torch.testing.assert_close(got[:, col], expected, atol=2e-5, rtol=0)


def test_all_phrasings_are_encoded_in_one_cached_batch(tiny, images, monkeypatch):
    metric = CLIPIQA('feel@ensemble', clip_model=tiny, clip_pretrained=None).eval()
    clip = metric.clip
    clip._text_cache.clear()
    calls = []
    original = clip.model.encode_text

    def counting(tokens, *args, **kwargs):
        calls.append(tokens.shape[0])
        return original(tokens, *args, **kwargs)

    monkeypatch.setattr(clip.model, 'encode_text', counting)
    with torch.no_grad():
        first = metric(images)
        second = metric(images[:1])
    expected_prompts = 2 * sum(len(ENSEMBLE_PHRASINGS[n]) for n in
                               ('aesthetic', 'happy', 'natural', 'new', 'scary', 'complex'))
    assert calls == [expected_prompts]  # one batch with every prompt, then the cache
    torch.testing.assert_close(first[:1], second)


def test_attribute_file_json_and_yaml(tmp_path, tiny, images):
    path = tmp_path / 'mine.json'
    path.write_text(json.dumps({'cosy': ['Cosy photo.|Bleak photo.', ['a cosy room', 'a bleak room']]}))
    assert load_attribute_file(path) == ['cosy']
    assert load_attribute_file(path) == ['cosy']  # loading again is harmless
    assert get_attribute('cosy').pairs == (('Cosy photo.', 'Bleak photo.'), ('a cosy room', 'a bleak room'))
    ypath = tmp_path / 'mine.yml'
    ypath.write_text('tidy:\n  - "Tidy photo.|Messy photo."\n  - [a tidy desk, a messy desk]\n  - [neat, chaotic]\n')
    assert load_attribute_file(ypath) == ['tidy']
    metric = CLIPIQA('tidy', clip_model=tiny, clip_pretrained=None)
    assert metric(images).shape == (3, 1)


@pytest.mark.parametrize('content, message', [
    ('{"x": ["only one side"]}', "attribute 'x' phrasing 0"),
    ('{"x": []}', "attribute 'x' needs a non-empty list"),
    ('[1, 2]', 'expected a mapping'),
    ('{"x": ', 'not valid JSON'),
    ('{"happy": ["A.|B."]}', "attribute 'happy' already exists"),
])
def test_attribute_file_errors_name_the_problem(tmp_path, content, message):
    path = tmp_path / 'bad.json'
    path.write_text(content)
    with pytest.raises(ValueError, match='bad.json') as info:
        load_attribute_file(path)
    assert message in str(info.value)
