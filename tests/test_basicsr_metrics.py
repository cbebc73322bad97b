"""Per-image CLIP-IQA metrics in BasicSR's form: BGR inputs, crop_border/input_order/test_y_channel as
BasicSR's own metrics, one model build per process, trained checkpoints with their own views."""
import numpy as np
import pytest
import torch

from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY
from uiqa_plugin.clip import CLIP_MEAN, CLIP_STD
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
    from uiqa_plugin.clip import clear_shared_clip
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


def test_metric_options_precision_and_ensemble_are_accepted(tiny_metric_factory, clip_opts):
    from uiqa_plugin.options import validate_options
    opt = {'name': 'sr', 'model_type': 'SRModel', 'scale': 4,
           'datasets': {'test': {'name': 't', 'type': 'PairedImageDataset', 'dataroot_gt': 'g', 'dataroot_lq': 'l',
                                 'io_backend': {'type': 'disk'}}},
           'network_g': {'type': 'MSRResNet', 'num_feat': 16, 'num_block': 2, 'upscale': 4},
           'val': {'save_img': False, 'metrics': {'clipiqa': {'type': 'calculate_clipiqa', 'precision': 'bf16',
                                                              'ensemble': 'mean_logit', 'better': 'higher'}}}}
    validate_options(opt, is_train=False, check_environment=False)  # README lists precision=: it was refused
    bgr = rgb_image(seed=5)[..., ::-1].copy()
    rgb01 = bgr[..., ::-1] / 255.0
    for precision in ('fp32', 'bf16'):
        expected = direct_score(tiny_metric_factory(precision=precision), rgb01)
        assert calculate_clipiqa(bgr, precision=precision, **clip_opts) == pytest.approx(expected, abs=1e-6)
    expected = direct_score(tiny_metric_factory('sharpness@ensemble', ensemble='mean_logit'), rgb01)
    assert calculate_clipiqa(bgr, attributes='sharpness@ensemble', ensemble='mean_logit',
                             **clip_opts) == pytest.approx(expected, abs=1e-6)


def test_outputs_below_clips_minimum_side_are_upscaled_as_uiqa_score_does(tiny_metric_factory, clip_opts, tmp_path):
    from PIL import Image

    import uiqa_plugin
    from uiqa_plugin.scoring.input_limits import minimum_input_side
    metric = tiny_metric_factory()
    side = minimum_input_side(metric.clip)
    rgb = rgb_image(side + 2, side + 20, seed=6)
    Image.fromarray(rgb[4:-4, 4:-4]).save(tmp_path / 'cropped.png')  # below the minimum once cropped
    expected = uiqa_plugin.score_paths(metric, [str(tmp_path / 'cropped.png')], workers=0, progress=False)
    # failed with torch's "Output size is too small" before
    value = calculate_clipiqa(rgb[..., ::-1].copy(), crop_border=4, **clip_opts)
    assert value == pytest.approx(expected.rows[0]['quality'], abs=1e-6)


class TowerCalls:
    """Counts passes of CLIP's image tower (ClipBackbone.encode_image), per tower instance."""

    def __init__(self, monkeypatch):
        from uiqa_plugin.clip import ClipBackbone
        self.calls = []
        encode = ClipBackbone.encode_image

        def counting(tower, *args, **kwargs):
            self.calls.append(tower)
            return encode(tower, *args, **kwargs)
        monkeypatch.setattr(ClipBackbone, 'encode_image', counting)


def uncached(metric, bgr):
    """The metric's model on the image, through its own forward (no feature cache)."""
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(bgr[..., ::-1].transpose(2, 0, 1), dtype=np.float32) / 255.0)
        return float(metric(x[None])[0, 0])


def test_clip_entries_of_one_validation_share_one_tower_pass_per_image(tiny_metric_factory, clip_opts,
                                                                       monkeypatch):
    from uiqa_plugin.metrics import clipiqa_metric
    entries = {name: dict(type='calculate_clipiqa', better='higher', attributes=name, **clip_opts)
               for name in ('quality', 'sharpness', 'noisiness')}
    images = [rgb_image(40, 56, seed=10 + i)[..., ::-1].copy() for i in range(4)]
    calculate_metric({'img': rgb_image(40, 40, seed=99)}, entries['quality'])  # builds the model and CLIP's minimum
    tower = TowerCalls(monkeypatch)
    values = {name: [calculate_metric({'img': img, 'img2': img}, opt) for img in images]  # BasicSR's loop
              for name, opt in entries.items()}
    # in BasicSR's order (every entry of one image, then the next image) as in the other order: one pass per image
    assert len(tower.calls) == len(images)
    for img in images:
        for opt in entries.values():
            calculate_metric({'img': img}, opt)
    assert len(tower.calls) == len(images)
    monkeypatch.undo()
    for name in entries:  # bit for bit the scores of the uncached forward
        metric = tiny_metric_factory(name)
        assert values[name] == [uncached(metric, img) for img in images]
    assert values['quality'] != values['sharpness']
    assert len(clipiqa_metric._TOWER_FEATURES) == len(images) + 1  # and the first image


def test_tower_features_never_leak_between_towers_or_settings(tiny_clip_files, clip_opts, monkeypatch):
    from uiqa_plugin.api import create_metric
    img = rgb_image(48, 64, seed=20)[..., ::-1].copy()
    other_weights = dict(clip_opts, clip_pretrained=tiny_clip_files['openclip'])  # same weights, other file
    vit = dict(clip_opts, clip_model=tiny_clip_files['vit_config'], clip_pretrained=tiny_clip_files['vit_weights'])
    configs = [dict(clip_opts), dict(clip_opts, keep_pos_embed=True), dict(clip_opts, precision='fp32-fused'), vit,
               dict(clip_opts, quick_gelu=True), other_weights]
    for options in configs:  # builds and measures each tower first
        calculate_clipiqa(rgb_image(40, 40, seed=98)[..., ::-1].copy(), **options)
    tower = TowerCalls(monkeypatch)
    values = [calculate_clipiqa(img, **options) for options in configs]
    assert len(tower.calls) == len(configs)  # every tower or setting computes its own features
    assert values[-1] == values[0]  # the other weight file holds the same weights
    monkeypatch.undo()
    for options, value in zip(configs, values):
        opts = {k: v for k, v in options.items() if k not in ('clip_model', 'clip_pretrained', 'device')}
        metric = create_metric(clip_model=options['clip_model'], clip_pretrained=options['clip_pretrained'],
                               device='cpu', **opts)
        assert value == uncached(metric, img)
    assert values[1] != values[0] and values[3] != values[0] and values[4] != values[0]


def test_tower_cache_is_bounded(clip_opts):
    from uiqa_plugin.metrics import clipiqa_metric
    for i in range(clipiqa_metric._TOWER_FEATURES.size + 10):
        calculate_clipiqa(rgb_image(40, 40, seed=200 + i)[..., ::-1].copy(), **clip_opts)
    assert len(clipiqa_metric._TOWER_FEATURES) == clipiqa_metric._TOWER_FEATURES.size
