"""create_metric's input contract: uint8 and float tensors score like the same image read from a file;
other scales are refused by name; images below CLIP's smallest input are upscaled as uiqa-score does."""
import numpy as np
import pytest
import torch
from PIL import Image

import uiqa_plugin
from uiqa_plugin.scoring.input_limits import minimum_input_side


def photo(h, w, seed=0):
    rng = np.random.RandomState(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = rng.randint(0, 256, (h, w))
    img[..., 2] = 90
    return img


def file_score(metric, img, tmp_path, name='x.png'):
    path = tmp_path / name
    Image.fromarray(img).save(path)
    result = uiqa_plugin.score_paths(metric, [str(path)], workers=0, progress=False)
    assert not result.failures, result.failures
    return result.rows[0]['quality']


def chw(img):
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]


def test_uint8_and_float_tensors_score_like_the_file(tiny_metric_factory, tmp_path):
    metric = tiny_metric_factory()
    img = photo(70, 90)
    expected = file_score(metric, img, tmp_path)
    with torch.no_grad():
        as_uint8 = metric(chw(img))[0, 0].item()  # returned NaN before: CLIP's mean/std were cast to uint8
        as_float = metric(chw(img).float() / 255.0)[0, 0].item()
        as_255 = tiny_metric_factory(data_range=255)(chw(img).float())[0, 0].item()
    assert as_uint8 == expected  # the same float32 pixels as the decoded file: bit for bit
    assert as_float == pytest.approx(expected, abs=1e-6)
    assert as_255 == pytest.approx(expected, abs=1e-6)


def test_floats_outside_the_range_are_refused(tiny_metric_factory):
    metric = tiny_metric_factory()
    img = chw(photo(70, 90)).float()
    with pytest.raises(ValueError, match=r'values span \[0, 255\], outside \[0, 1\].*data_range=255'):
        metric(img)  # [0, 255] floats were scored as if they were [0, 1] before
    with pytest.raises(ValueError, match=r'outside \[0, 1\]'):
        metric(img / 255.0 - 0.1)
    with torch.no_grad():  # dithering by half an 8-bit step is still an image in [0, 1]
        dithered = img / 255.0 + torch.where(img > 127, 0.5, -0.5) / 255
        assert dithered.min() < 0 and dithered.max() > 1
        assert metric(dithered)[0, 0].item() == pytest.approx(metric(img / 255.0)[0, 0].item(), abs=1e-3)
    with pytest.raises(ValueError, match='data_range: must be positive'):
        tiny_metric_factory(data_range=0)
    with pytest.raises(TypeError, match='expected uint8 or float images, got torch.int32'):
        metric(img.int())


def test_small_images_are_upscaled_as_uiqa_score_does(tiny_metric_factory, tmp_path):
    metric = tiny_metric_factory()
    side = minimum_input_side(metric.clip)
    img = photo(side // 2, side - 3, seed=1)  # both sides below the minimum
    expected = file_score(metric, img, tmp_path)
    with torch.no_grad():
        assert metric(chw(img))[0, 0].item() == expected
        assert metric(chw(img).float() / 255.0)[0, 0].item() == pytest.approx(expected, abs=1e-6)


def test_normalized_input_metric_takes_floats_as_given(tiny_metric_factory):
    from uiqa_plugin.clip import CLIP_MEAN, CLIP_STD
    plain, normalized = tiny_metric_factory(), tiny_metric_factory(input_normalized=True)
    img = chw(photo(70, 90)).float() / 255.0
    mean, std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert normalized((img - mean) / std)[0, 0].item() == pytest.approx(plain(img)[0, 0].item(), abs=1e-6)
    with pytest.raises(TypeError, match='input_normalized=True'):
        normalized(chw(photo(70, 90)))



def test_data_range_applies_to_tensors_only_not_to_files(tiny_metric_factory, tmp_path):
    """A metric built for [0, 255] tensors scores files like any other: uiqa-score's loader hands it images
    already in [0, 1], which must not be divided by 255 again (they used to reach CLIP nearly black)."""
    img = photo(70, 90, seed=3)
    unit, wide = tiny_metric_factory(), tiny_metric_factory(data_range=255)
    assert file_score(wide, img, tmp_path) == file_score(unit, img, tmp_path)
    with torch.no_grad():
        assert wide(chw(img).float())[0, 0].item() == file_score(unit, img, tmp_path)


def test_score_goes_through_the_input_contract(tiny_metric_factory):
    """metric.score(images) converts like metric(images): uint8 is scaled, small images are upscaled."""
    metric = tiny_metric_factory('quality,sharpness')
    images = chw(photo(20, 30))  # uint8, below the tiny tower's smallest side
    with torch.no_grad():
        called, scored = metric(images), metric.score(images)
    assert list(scored) == ['quality', 'sharpness']
    assert torch.equal(scored['quality'], called[:, 0]) and torch.equal(scored['sharpness'], called[:, 1])
