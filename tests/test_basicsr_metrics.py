"""Per-image CLIP-IQA metrics in BasicSR's form: BGR inputs, crop_border/input_order/test_y_channel as
BasicSR's own metrics, one model build per process, trained checkpoints with their own views."""
import numpy as np
import pytest
import torch

from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY
from uiqa_plugin.clip_backbone import CLIP_MEAN, CLIP_STD
from uiqa_plugin.data.image_ops import center_crop, fragment_mosaic
from uiqa_plugin.metrics.clipiqa_metric import calculate_clipiqa, calculate_uiqa_checkpoint, clear_model_cache


@pytest.fixture(autouse=True)
def fresh_cache():
    clear_model_cache()
    yield
    clear_model_cache()


@pytest.fixture
def clip_opts(tiny_clip_files):
    return {'clip_model': tiny_clip_files['config'], 'clip_pretrained': tiny_clip_files['openai'], 'device': 'cpu'}


def rgb_image(h=48, w=64, seed=0):
    """uint8 RGB whose channels differ strongly: red ramp, constant green, noisy blue."""
    rng = np.random.RandomState(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = 40
    img[..., 2] = rng.randint(0, 256, (h, w))
    return img


def direct_score(metric, rgb01):
    """create_metric's model on an RGB float image (H, W, 3) in [0, 1]."""
    with torch.no_grad():
        image = torch.from_numpy(np.ascontiguousarray(rgb01, dtype=np.float32)).permute(2, 0, 1)[None]
        return metric(image)[0, 0].item()


def test_bgr_input_scores_like_its_rgb_image(tiny_metric_factory, clip_opts):
    rgb = rgb_image()
    bgr = rgb[..., ::-1].copy()  # what BasicSR's tensor2img hands to metrics
    expected = direct_score(tiny_metric_factory(), rgb / 255.0)
    assert calculate_clipiqa(bgr, **clip_opts) == pytest.approx(expected, abs=1e-6)
    # the channel order matters for this image: reading it unconverted gives another score
    swapped = direct_score(tiny_metric_factory(), bgr / 255.0)
    assert abs(swapped - expected) > 1e-5
    assert calculate_clipiqa(rgb, channel_order='RGB', **clip_opts) == pytest.approx(expected, abs=1e-6)


def test_called_the_way_basicsr_calls_metrics(tiny_metric_factory, clip_opts):
    rgb = rgb_image(seed=1)
    bgr = rgb[..., ::-1].copy()
    assert METRIC_REGISTRY.get('calculate_clipiqa') is calculate_clipiqa
    # SRModel.validation: calculate_metric({'img': sr, 'img2': gt}, opt) with the whole option dict
    value = calculate_metric({'img': bgr, 'img2': np.zeros_like(bgr)},
                             dict(type='calculate_clipiqa', better='higher', crop_border=0, **clip_opts))
    assert value == pytest.approx(direct_score(tiny_metric_factory(), rgb / 255.0), abs=1e-6)
    with pytest.raises(TypeError, match="unexpected option.*'attribute'"):
        calculate_clipiqa(bgr, attribute='quality', **clip_opts)


def test_crop_border_input_order_grey_and_value_ranges(tiny_metric_factory, clip_opts):
    rgb = rgb_image(seed=2)
    bgr = rgb[..., ::-1].copy()
    metric = tiny_metric_factory()
    cropped = direct_score(metric, rgb[4:-4, 4:-4] / 255.0)
    assert calculate_clipiqa(bgr, crop_border=4, **clip_opts) == pytest.approx(cropped, abs=1e-6)
    assert calculate_clipiqa(bgr, crop_border=4, **clip_opts) != pytest.approx(calculate_clipiqa(bgr, **clip_opts),
                                                                                abs=1e-7)
    hwc = calculate_clipiqa(bgr, **clip_opts)
    assert calculate_clipiqa(bgr.transpose(2, 0, 1).copy(), input_order='CHW', **clip_opts) == pytest.approx(hwc,
                                                                                                            abs=1e-6)
    # float in [0, 255] (BasicSR's metric convention) and uint16 give the uint8 result
    assert calculate_clipiqa(bgr.astype(np.float64), **clip_opts) == pytest.approx(hwc, abs=1e-6)
    assert calculate_clipiqa(bgr.astype(np.uint16) * 257, **clip_opts) == pytest.approx(hwc, abs=1e-6)
    assert calculate_clipiqa(bgr / 255.0, max_value=1.0, **clip_opts) == pytest.approx(hwc, abs=1e-6)
    grey = rgb[..., 0]
    expected_grey = direct_score(metric, np.repeat(grey[..., None] / 255.0, 3, axis=2))
    assert calculate_clipiqa(grey, **clip_opts) == pytest.approx(expected_grey, abs=1e-6)
    with pytest.raises(ValueError, match='crop_border 30 removes'):
        calculate_clipiqa(bgr, crop_border=30, **clip_opts)
    with pytest.raises(ValueError, match='input_order'):
        calculate_clipiqa(bgr, input_order='WHC', **clip_opts)


def test_y_channel_is_bt601_luma_replicated(tiny_metric_factory, clip_opts):
    rgb = rgb_image(seed=3)
    r, g, b = (rgb[..., i] / 255.0 for i in range(3))
    y = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0  # ITU-R BT.601, as BasicSR's to_y_channel
    expected = direct_score(tiny_metric_factory(), np.repeat(y[..., None], 3, axis=2))
    assert calculate_clipiqa(rgb[..., ::-1].copy(), test_y_channel=True, **clip_opts) == pytest.approx(expected,
                                                                                                       abs=1e-5)


def test_a_validation_of_100_images_builds_clip_once(clip_opts, monkeypatch):
    import open_clip
    from uiqa_plugin.archs.clipiqa_arch import CLIPIQA
    from uiqa_plugin.clip_backbone import clear_shared_clip
    clear_shared_clip()
    counts = {'metric': 0, 'clip': 0}
    init, create = CLIPIQA.__init__, open_clip.create_model

    def counting_init(self, *args, **kwargs):
        counts['metric'] += 1
        init(self, *args, **kwargs)

    def counting_create(*args, **kwargs):
        counts['clip'] += 1
        return create(*args, **kwargs)
    monkeypatch.setattr(CLIPIQA, '__init__', counting_init)
    monkeypatch.setattr(open_clip, 'create_model', counting_create)
    opt = dict(type='calculate_clipiqa', better='higher', attributes=['quality'], **clip_opts)  # a list: hashed too
    values = [calculate_metric({'img': rgb_image(32, 32, seed=i)}, opt) for i in range(100)]
    assert counts == {'metric': 1, 'clip': 1}
    assert len(set(values)) > 1 and all(0 <= v <= 1 for v in values)
    calculate_metric({'img': rgb_image(32, 32)}, dict(opt, attributes='sharpness'))  # other options: a new model
    assert counts == {'metric': 2, 'clip': 1}  # ... on the same shared CLIP


def test_one_number_per_metric(clip_opts):
    with pytest.raises(ValueError, match='one val.metrics entry per attribute'):
        calculate_clipiqa(rgb_image(), attributes='quality,sharpness', **clip_opts)


@pytest.fixture
def uiqa_checkpoint(uiqa_checkpoint_factory):
    path, net = uiqa_checkpoint_factory({'image': {}, 'fragments': {'grid': 2, 'patch': 16}, 'salient': {'size': 32}})
    return path, net.eval()


def test_checkpoint_metric_builds_the_checkpoints_views(uiqa_checkpoint):
    path, net = uiqa_checkpoint
    rgb = rgb_image(60, 80, seed=4)
    img = rgb / 255.0

    def normalize(x):
        x = (x - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
        return torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1))[None]
    with torch.no_grad():
        expected = net({'image': normalize(img), 'fragments': normalize(fragment_mosaic(img, 2, 16)),
                        'salient': normalize(center_crop(img, 32))})[0]
    bgr = rgb[..., ::-1].copy()
    value = calculate_metric({'img': bgr, 'img2': bgr}, {'type': 'calculate_uiqa_checkpoint', 'checkpoint': path,
                                                         'device': 'cpu', 'better': 'higher'})
    assert value == pytest.approx(expected[0].item(), abs=1e-5)
    assert expected.shape == (1,)  # two attributes regressed to one score
    assert calculate_uiqa_checkpoint(bgr, checkpoint=path, device='cpu', output='score') == value
    with pytest.raises(ValueError, match=r"output 1 out of range for outputs \['score'\]"):
        calculate_uiqa_checkpoint(bgr, checkpoint=path, device='cpu', output=1)
    with pytest.raises(ValueError, match='give checkpoint'):
        calculate_uiqa_checkpoint(bgr)
