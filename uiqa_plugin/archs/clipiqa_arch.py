"""CLIP-IQA (zero-shot): antonym prompt pairs scored against a frozen CLIP without positional embedding."""
import torch
import torch.nn as nn
from basicsr.utils.registry import ARCH_REGISTRY

from uiqa_plugin.archs.clip_options import CLIP_RULES
from uiqa_plugin.archs.clip_scoring import aggregate_phrasings, pair_logit_differences
from uiqa_plugin.archs.shared_clip import SharedClipMixin
from uiqa_plugin.clip import check_pos_embed_mode, load_clip
from uiqa_plugin.clip_precision import check_precision
from uiqa_plugin.prompts import resolve_attributes


@ARCH_REGISTRY.register()
class CLIPIQA(SharedClipMixin, nn.Module):
    """Zero-shot CLIP-IQA over any set of attributes.

    Args:
        attributes: names, presets (``look``, ``feel``, ``pyiqa``...) or ``"positive|negative"`` pairs
            (see ``uiqa_plugin.prompts``), as a comma-separated string or a list.
        clip_model: open_clip model name (``RN50``) or a JSON model config file.
        clip_pretrained: open_clip tag (``openai``), a local weight file, or None (random; tests only).
        keep_pos_embed: keep CLIP's positional embedding, interpolated in 2-D to the input size (True),
            or stretched in 1-D as pyiqa does ('stretch_1d', for its 512 px CLIP-IQA+ weights).
        input_normalized: inputs are already CLIP-normalized (datasets that normalize); else RGB in [0, 1].
        ensemble: how phrasings of one attribute combine, ``mean_prob`` or ``mean_logit``.
        quick_gelu: CLIP's MLP activation; None picks it from the weights (QuickGELU for OpenAI's
            and every RN50 weight set; see ``clip.pretrained.resolve_quick_gelu``), True/False forces it.
        precision: ``fp32`` (the reference), ``bf16`` or ``fp16`` (CUDA only) for the image tower's heavy
            layers; the attention pool, projections and probabilities stay fp32 (``uiqa_plugin.clip_precision``).

    forward: (N, 3, H, W), any H and W -> (N, P) probabilities in [0, 1], one column per attribute.
    """

    #: choices and ranges of the options, checked before anything is built (``uiqa_plugin.option_rules``)
    option_rules = CLIP_RULES

    def __init__(self, attributes='quality', clip_model='RN50', clip_pretrained='openai', keep_pos_embed=False,
                 input_normalized=False, ensemble='mean_prob', quick_gelu=None, precision='fp32'):
        super().__init__()
        self.precision = check_precision(precision)
        self.attributes = resolve_attributes(attributes)
        self._attach_clip(load_clip(clip_model, clip_pretrained, quick_gelu=quick_gelu))
        self.keep_pos_embed = check_pos_embed_mode(keep_pos_embed)
        self.input_normalized = input_normalized
        self.ensemble = ensemble
        aggregate_phrasings(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long), 1, ensemble)  # validate early
        self.prompts = tuple(p for attr in self.attributes for p in attr.prompts)
        group = [i for i, attr in enumerate(self.attributes) for _ in attr.pairs]
        self.register_buffer('group_index', torch.tensor(group, dtype=torch.long), persistent=False)

    def encode_images(self, images):
        """(N, 3, H, W) -> unit-norm features (N, D): one pass of the image tower for all attributes."""
        if not self.input_normalized:
            images = self.clip.normalize(images)
        return self.clip.encode_image(images, keep_pos_embed=self.keep_pos_embed, precision=self.precision)

    def scores_from_features(self, image_features):
        """(N, D) image features -> (N, P) attribute probabilities, with all 2K prompts encoded in one cached batch."""
        text = self.clip.text_features(self.prompts)
        diffs = pair_logit_differences(image_features, text.to(image_features.dtype), self.clip.logit_scale())
        return aggregate_phrasings(diffs, self.group_index, len(self.attributes), self.ensemble)

    views = ('image',)

    def forward(self, images):
        if isinstance(images, dict):  # a batch of named views from our datasets
            images = images['image']
        return self.scores_from_features(self.encode_images(images))

    def score(self, images):
        """Like calling the module (its input hooks included), as {attribute name: (N,) tensor}."""
        scores = self(images)
        return {name: scores[:, i] for i, name in enumerate(self.attribute_names)}
