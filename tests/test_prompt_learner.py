"""CoOp prompt learner: token layout from the tokenizer, phrase initialisation, only the context trains."""
import pytest
import torch

from uiqa_plugin.archs.prompt_learner import PromptLearner
from uiqa_plugin.clip import load_clip


@pytest.fixture(scope='module')
def clip(tiny_clip_files):
    return load_clip(tiny_clip_files['config'], tiny_clip_files['openai'])


def test_layout_and_eot_for_each_position(clip):
    good = clip.tokenize(['Good photo..'])[0]
    class_ids = good[1:int(good.argmax())].tolist()  # 'good photo ..'
    assert len(class_ids) == 3
    expected = {
        'front': ['SOS'] + class_ids + ['CTX'] * 16 + ['EOT'],
        'middle': ['SOS'] + ['CTX'] * 8 + class_ids + ['CTX'] * 8 + ['EOT'],
        'end': ['SOS'] + ['CTX'] * 16 + class_ids + ['EOT'],
    }
    for position, layout in expected.items():
        learner = PromptLearner(clip, [('Good photo.', 'Bad photo.')], n_ctx=16, class_token_position=position)
        got = learner.token_layout()[0]
        assert got[:len(layout)] == layout and set(got[len(layout):]) == {'PAD'}
        assert len(got) == clip.context_length
        assert int(learner.eot_index[0]) == 1 + 16 + 3  # SOS + context + class segment
        assert learner.prompt_embeddings().shape == (2, clip.context_length, clip.text_width)


@pytest.mark.parametrize('position,template', [('end', 'a photo of a {}.'), ('front', '{}. a photo of a')])
def test_phrase_initialised_context_equals_plain_text_encoding(clip, position, template):
    learner = PromptLearner(clip, [('Good photo.', 'Bad photo.')], ctx_init='a photo of a',
                            class_token_position=position)
    assert learner.n_ctx == 4
    with torch.no_grad():
        learned = learner()
        plain = clip.encode_text([template.format('Good photo.'), template.format('Bad photo.')])
    assert torch.allclose(learned, plain, atol=1e-5)


def test_middle_position_with_phrase_splits_the_phrase(clip):
    learner = PromptLearner(clip, [('Good photo.', 'Bad photo.')], ctx_init='a nice photo of', n_ctx=99,
                            class_token_position='middle')
    with torch.no_grad():
        assert torch.allclose(learner(), clip.encode_text(['a nice Good photo.. photo of', 'a nice Bad photo.. photo of']),
                              atol=1e-5)


def test_only_context_trains_and_gradients_reach_it(clip):
    learner = PromptLearner(clip, [('Good photo.', 'Bad photo.'), ('Sharp photo.', 'Blurry photo.')])
    assert [n for n, p in learner.named_parameters()] == ['ctx']
    assert learner.ctx.shape == (2, 16, clip.text_width)  # one context per pair
    assert list(learner.state_dict()) == ['ctx']
    learner().sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    per_prompt = PromptLearner(clip, [('Good photo.', 'Bad photo.')], context='prompt')
    assert per_prompt.ctx.shape == (2, 16, clip.text_width)


def test_shared_pair_context_is_used_by_both_prompts(clip):
    learner = PromptLearner(clip, [('Good photo.', 'Bad photo.')], n_ctx=4, class_token_position='end')
    emb = learner.prompt_embeddings()
    assert torch.equal(emb[0, 1:5], emb[1, 1:5])


def test_bad_options(clip):
    with pytest.raises(ValueError, match='class_token_position'):
        PromptLearner(clip, [('a', 'b')], class_token_position='back')
    with pytest.raises(ValueError, match='context'):
        PromptLearner(clip, [('a', 'b')], context='class')
