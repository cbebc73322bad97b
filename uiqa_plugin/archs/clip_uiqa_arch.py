"""CLIP-UIQA: each image seen in several formats through one frozen CLIP, views and pairs aggregated.

Views (any subset, the three formats of the CLIP-UIQA study): ``image`` (the original, global aesthetics), ``fragments``
(grid mini-patch mosaic, local distortions) and ``salient`` (centre patch, the subject).
Each view goes through the image tower ONCE; the text features of all prompts are computed
once per forward (learned context) or cached (fixed prompts). Per-view, per-attribute
probabilities (N, V, P) are aggregated over views (mean | concat | learned | attention)
and mapped to a score by the non-linear regressor, or used as they are when there is one
attribute and no concatenation.

CLIP-IQA+ is the one-view case with learned prompts (``CLIPIQAPlus``).
"""
import torch
import torch.nn as nn
from basicsr.utils.registry import ARCH_REGISTRY

from uiqa_plugin.archs.clip_options import CLIP_RULES, finetune_clip_problem, prompt_block
from uiqa_plugin.archs.clip_scoring import aggregate_phrasings, pair_logit_differences
from uiqa_plugin.archs.heads import QualityRegressor
from uiqa_plugin.archs.prompt_learner import PromptLearner
from uiqa_plugin.archs.shared_clip import SharedClipMixin
from uiqa_plugin.clip import check_pos_embed_mode, load_clip
from uiqa_plugin.clip_precision import check_precision
from uiqa_plugin.option_rules import Names, OneOf
from uiqa_plugin.prompts import resolve_attributes

VIEW_NAMES = ('image', 'fragments', 'salient')
AGGREGATIONS = ('mean', 'concat', 'learned', 'attention')


class ViewAggregation(nn.Module):
    """(N, V, P) per-view probabilities -> (N, P) or (N, V*P) for ``concat``.

    ``learned``: trainable softmax weights over views, one set per attribute.
    ``attention``: per-sample weights over views from each view's image features (N, V, D).
    """

    def __init__(self, mode, num_views, num_attributes, feature_dim):
        super().__init__()
        if mode not in AGGREGATIONS:
            raise ValueError(f'aggregation must be one of {AGGREGATIONS}, got {mode!r}')
        self.mode = mode
        if mode == 'learned':
            self.view_logits = nn.Parameter(torch.zeros(num_views, num_attributes))  # starts as the mean
        elif mode == 'attention':
            self.view_scorer = nn.Linear(feature_dim, num_attributes)
            nn.init.zeros_(self.view_scorer.weight)
            nn.init.zeros_(self.view_scorer.bias)

    def out_dim(self, num_views, num_attributes):
        return num_views * num_attributes if self.mode == 'concat' else num_attributes

    def view_weights(self, features=None):
        """(V, P) for ``learned``, (N, V, P) for ``attention``."""
        if self.mode == 'learned':
            return torch.softmax(self.view_logits, dim=0)
        if self.mode == 'attention':
            return torch.softmax(self.view_scorer(features), dim=1)
        raise ValueError(f'{self.mode} aggregation has no weights')

    def forward(self, probs, features):
        if self.mode == 'mean':
            return probs.mean(dim=1)
        if self.mode == 'concat':
            return probs.flatten(1)
        weights = self.view_weights(features).to(probs.dtype)
        return (probs * weights).sum(dim=1)


@ARCH_REGISTRY.register()
class CLIPUIQA(SharedClipMixin, nn.Module):
    """Multi-format CLIP quality model.

    Args:
        views: the view names fed to forward, a subset of ``image``, ``fragments``, ``salient``.
        attributes: prompt pairs (names, presets, "pos|neg"), as for CLIPIQA.
        prompt: 'learned' (CoOp context, see PromptLearner) or 'fixed' (the written prompts).
        prompt_opt: PromptLearner options (n_ctx, ctx_init, class_token_position, context, init_std).
        aggregation: 'mean' | 'concat' | 'learned' | 'attention' over views.
        head: 'auto' (regressor unless one attribute and no concat), 'regressor' or 'none'.
        finetune_clip: dotted parts of the open_clip model to train (e.g. ['visual.layer4']); default none.
        clip_model, clip_pretrained, keep_pos_embed, input_normalized, quick_gelu, precision: as for CLIPIQA;
            with a low precision on CUDA, learned prompts also run CLIP's text blocks under autocast in training.

    forward(views): dict {view: (N, 3, H, W)} (or one tensor when there is one view) -> (N, 1)
    with a head, else (N, P) probabilities in [0, 1].
    """

    #: choices and ranges of the options, checked before anything is built (``uiqa_plugin.option_rules``)
    option_rules = {
        **CLIP_RULES,
        'views': Names(VIEW_NAMES),
        'prompt': OneOf('learned', 'fixed'),
        'prompt_opt': prompt_block(),
        'aggregation': OneOf(*AGGREGATIONS),
        'head': OneOf('auto', 'regressor', 'none'),
        'finetune_clip': finetune_clip_problem,
    }

    def __init__(self, views=VIEW_NAMES, attributes='quality', prompt='learned', prompt_opt=None,
                 aggregation='mean', head='auto', finetune_clip=(), clip_model='RN50', clip_pretrained='openai',
                 keep_pos_embed=False, input_normalized=True, quick_gelu=None, ensemble='mean_prob',
                 precision='fp32'):
        super().__init__()
        self.precision = check_precision(precision)
        views = [views] if isinstance(views, str) else list(views)
        unknown = [v for v in views if v not in VIEW_NAMES]
        if unknown or not views or len(set(views)) != len(views):
            raise ValueError(f'views must be distinct names from {VIEW_NAMES}, got {views}')
        if prompt not in ('learned', 'fixed'):
            raise ValueError(f"prompt must be 'learned' or 'fixed', got {prompt!r}")
        self.views = views
        self.attributes = resolve_attributes(attributes)
        self.keep_pos_embed = check_pos_embed_mode(keep_pos_embed)
        self.input_normalized = input_normalized
        self.ensemble = ensemble
        clip = load_clip(clip_model, clip_pretrained, quick_gelu=quick_gelu)
        if finetune_clip:
            clip = clip.private_copy()  # copy-on-unfreeze: the shared CLIP of every other model never changes
        self._attach_clip(clip)

        pairs = [pair for attr in self.attributes for pair in attr.pairs]
        self.prompts = tuple(p for pair in pairs for p in pair)
        group = [i for i, attr in enumerate(self.attributes) for _ in attr.pairs]
        self.register_buffer('group_index', torch.tensor(group, dtype=torch.long), persistent=False)
        self.prompt_learner = PromptLearner(clip, pairs, **(prompt_opt or {})) if prompt == 'learned' else None

        num_attr = len(self.attributes)
        self.aggregation = ViewAggregation(aggregation, len(views), num_attr, clip.embed_dim)
        in_dim = self.aggregation.out_dim(len(views), num_attr)
        if head == 'auto':
            head = 'none' if in_dim == 1 else 'regressor'
        if head == 'none' and aggregation == 'concat' and len(views) > 1:
            raise ValueError("head 'none' needs an aggregation that gives one value per attribute, not concat")
        if head not in ('regressor', 'none'):
            raise ValueError(f"head must be 'auto', 'regressor' or 'none', got {head!r}")
        self.regressor = QualityRegressor(in_dim) if head == 'regressor' else None

        # Parts of CLIP that train are registered here, so they are saved and loaded with us.
        unused = () if keep_pos_embed else ('positional_embedding',)
        parts = clip.unfreeze(list(finetune_clip), keep_frozen=unused) if finetune_clip else {}
        self.clip_trainable = nn.ModuleDict({k.replace('.', '__'): m for k, m in parts.items()})

    def train(self, mode=True):
        super().train(mode)
        # Fine-tuned CLIP parts keep their BatchNorm statistics (RN towers), as CLIP-IQA+ keeps CLIP: eval mode always.
        self.clip_trainable.eval()
        return self

    def _trained_text_inputs(self):
        """The trainable tensors the text features depend on: the context and any fine-tuned text-tower part."""
        params = [self.prompt_learner.ctx] if self.prompt_learner is not None else []
        if self.clip.text_trains:
            params += [p for name, p in self.clip.model.named_parameters()
                       if p.requires_grad and not name.startswith('visual.')]
        return params

    def text_features(self):
        """(2K, D) text features: encoded with gradients whenever something they depend on trains.

        Fixed prompts over a frozen text tower come from CLIP's cache. Otherwise (learned
        context, or a fine-tuned text tower) they are encoded once per training step, and
        without gradients (validation, scoring) once until a trained tensor changes (an
        optimizer step or a checkpoint load bumps its version).
        """
        if self.prompt_learner is None and not self.clip.text_trains:
            return self.clip.text_features(self.prompts)
        if self.prompt_learner is not None:
            def encode():
                return self.prompt_learner(precision=self.precision)
        else:
            def encode():
                return self.clip.encode_text(self.prompts)
        if torch.is_grad_enabled():
            return encode()
        key = (id(self.clip),) + tuple((p._version, p.data_ptr()) for p in self._trained_text_inputs())
        cached = self.__dict__.get('_learned_text')
        if cached is None or cached[0] != key:
            cached = (key, encode())
            self.__dict__['_learned_text'] = cached
        return cached[1]

    def encode_views(self, inputs):
        """{view: (N, 3, H, W)} -> (N, V, D) features, one image-tower pass per view."""
        if torch.is_tensor(inputs):
            if len(self.views) != 1:
                raise ValueError(f'this model takes the views {self.views}: pass a dict of tensors')
            inputs = {self.views[0]: inputs}
        missing = [v for v in self.views if v not in inputs]
        if missing:
            raise KeyError(f'missing views {missing}; the model was built for {self.views}, got {list(inputs)}')
        grad = len(self.clip_trainable) > 0 and torch.is_grad_enabled()
        feats = []
        with torch.set_grad_enabled(grad):
            for name in self.views:
                x = inputs[name]
                if not self.input_normalized:
                    x = self.clip.normalize(x)
                feats.append(self.clip.encode_image(x, keep_pos_embed=self.keep_pos_embed, precision=self.precision))
        return torch.stack(feats, dim=1)

    def view_probabilities(self, features, text):
        """(N, V, D) view features, (2K, D) text -> (N, V, P) attribute probabilities."""
        n, v, d = features.shape
        diffs = pair_logit_differences(features.reshape(n * v, d), text.to(features.dtype), self.clip.logit_scale())
        probs = aggregate_phrasings(diffs, self.group_index, len(self.attributes), self.ensemble)
        return probs.reshape(n, v, -1)

    def forward(self, inputs, return_details=False):
        features = self.encode_views(inputs)
        probs = self.view_probabilities(features, self.text_features())
        pooled = self.aggregation(probs, features)
        score = pooled
        if self.regressor is not None:
            # Probabilities are fp32 even in a .half() model (clip_scoring): the head takes its own dtype.
            score = self.regressor(pooled.to(self.regressor.linear_1.weight.dtype))
        if return_details:
            return score, {'view_probs': probs, 'pooled': pooled}
        return score


@ARCH_REGISTRY.register()
class CLIPIQAPlus(CLIPUIQA):
    """CLIP-IQA+ (Wang et al., AAAI 2023): learned prompt context on the original image alone.

    (N, 3, H, W) -> (N, 1): the learned probability of the first prompt with one attribute,
    the regressor's score over the P probabilities with several.
    """

    def __init__(self, attributes='quality', prompt_opt=None, clip_model='RN50', clip_pretrained='openai',
                 input_normalized=True, **kwargs):
        kwargs.setdefault('views', ['image'])
        super().__init__(attributes=attributes, prompt='learned', prompt_opt=prompt_opt, clip_model=clip_model,
                         clip_pretrained=clip_pretrained, input_normalized=input_normalized, **kwargs)
