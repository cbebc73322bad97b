"""The frozen CLIP model: image encoding at any size without positional embedding, text encoding.

CLIP-IQA feeds full-resolution images, so the positional embedding (learned for a 7 x 7
grid at 224 px) is removed by default. For ResNet towers the attention pool runs with the
spatial mean token as the only query and no positional term; for ViT towers the class token
and patch tokens get no positional term. With ``keep_pos_embed=True`` the learned grid is
interpolated in 2-D to the input's grid, the class/mean slot kept apart, so a 224 x 224
input reproduces open_clip's own forward; ``keep_pos_embed='stretch_1d'`` reproduces pyiqa's
1-D stretch of the flattened list (its 512 px CLIP-IQA+ models were trained with it).
"""
import contextlib
import copy

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.modified_resnet import ModifiedResNet
from open_clip.transformer import VisionTransformer

from uiqa_plugin.clip.errors import ClipLoadError
from uiqa_plugin.clip_precision import (attention_pool_query, autocast, check_precision, compute_dtype, full_precision,
                                        resnet_trunk_low_precision)
from uiqa_plugin.data.transforms import CLIP_MEAN, CLIP_STD


def interpolate_grid_embedding(pos_embed, grid_hw, num_prefix=1):
    """Resize a learned positional embedding to another token grid, in 2-D.

    pos_embed: (num_prefix + S*S, C) with a square S x S grid; returns
    (num_prefix + h*w, C). The prefix (class / mean slot) is kept apart, not stretched.
    """
    prefix, grid = pos_embed[:num_prefix], pos_embed[num_prefix:]
    side = int(round(grid.shape[0] ** 0.5))
    if side * side != grid.shape[0]:
        raise ValueError(f'positional embedding grid of {grid.shape[0]} tokens is not square')
    h, w = grid_hw
    if (h, w) != (side, side):
        grid = grid.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=(h, w), mode='bicubic', align_corners=False).to(pos_embed.dtype)
        grid = grid.permute(0, 2, 3, 1).reshape(h * w, -1)
    return torch.cat([prefix, grid], dim=0)


POS_EMBED_MODES = (False, True, 'interpolate_2d', 'stretch_1d')


def check_pos_embed_mode(mode):
    """``keep_pos_embed`` values: False (removed, CLIP-IQA), True / 'interpolate_2d', 'stretch_1d'."""
    if mode not in POS_EMBED_MODES or (mode is not True and mode is not False and not isinstance(mode, str)):
        raise ValueError(f"keep_pos_embed must be false, true ('interpolate_2d') or 'stretch_1d', got {mode!r}")
    return mode


def stretch_embedding_1d(pos_embed, num_tokens):
    """pyiqa's resize of a positional embedding (its clipiqa+_rn50_512 / _vitL14_512 models).

    The flattened (1 + S*S, C) list, class/mean slot included, is resized bicubically along
    the token axis to (num_tokens, C), ignoring the grid's two dimensions. Geometrically
    wrong (the class slot is stretched with the grid), kept to reproduce weights trained with it.
    """
    work = pos_embed if pos_embed.dtype == torch.float64 else pos_embed.float()
    out = F.interpolate(work[None, None], size=(num_tokens, pos_embed.shape[1]), mode='bicubic')
    return out[0, 0].to(pos_embed.dtype)


def resize_positional_embedding(pos_embed, grid_hw, mode=True):
    """The positional embedding for an (h, w) token grid: 2-D interpolation, or pyiqa's 1-D stretch."""
    if mode == 'stretch_1d':
        return stretch_embedding_1d(pos_embed, 1 + grid_hw[0] * grid_hw[1])
    return interpolate_grid_embedding(pos_embed, grid_hw)


def attention_pool(pool, feature_map, keep_pos_embed=False):
    """CLIP's ResNet attention pool over any spatial size.

    feature_map: (N, C, H, W). The spatial mean token is the only query; with
    ``keep_pos_embed=False`` no positional term is added. Returns (N, output_dim).
    """
    n, c, h, w = feature_map.shape
    tokens = feature_map.flatten(2).permute(2, 0, 1)  # (HW, N, C)
    tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
    if keep_pos_embed:
        tokens = tokens + resize_positional_embedding(pool.positional_embedding, (h, w), keep_pos_embed)[:, None, :].to(
            tokens.dtype)
    out, _ = F.multi_head_attention_forward(
        query=tokens[:1], key=tokens, value=tokens,
        embed_dim_to_check=c,
        num_heads=pool.num_heads,
        q_proj_weight=pool.q_proj.weight,
        k_proj_weight=pool.k_proj.weight,
        v_proj_weight=pool.v_proj.weight,
        in_proj_weight=None,
        in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]),
        bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
        out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
        use_separate_proj_weight=True, training=False, need_weights=False)
    return out[0]


def resnet_forward(visual, x, keep_pos_embed, precision='fp32'):
    if precision != 'fp32':  # low-precision trunk, fp32 attention pool (clip_precision)
        x = resnet_trunk_low_precision(visual, x, precision)
        h, w = x.shape[-2:]
        pos = resize_positional_embedding(visual.attnpool.positional_embedding, (h, w), keep_pos_embed) \
            if keep_pos_embed else None
        return attention_pool_query(visual.attnpool, x, pos)
    x = visual.stem(x)
    x = visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))
    return attention_pool(visual.attnpool, x, keep_pos_embed)


def vit_forward(visual, x, keep_pos_embed, precision='fp32'):
    with autocast(precision, x.device):  # patch embedding and blocks; pooling and projection below in fp32
        x = visual.conv1(x)  # (N, width, gh, gw)
        gh, gw = x.shape[-2:]
        x = x.flatten(2).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).reshape(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        if keep_pos_embed:
            x = x + resize_positional_embedding(visual.positional_embedding, (gh, gw), keep_pos_embed).to(x.dtype)
        x = visual.patch_dropout(x)
        x = visual.ln_pre(x)
        x = visual.transformer(x)
    if precision != 'fp32':
        x = x.float()
    with full_precision(x.device) if precision != 'fp32' else contextlib.nullcontext():
        pooled, _ = visual._pool(x)
        if visual.proj is not None:
            pooled = pooled @ visual.proj
    return pooled


class ClipBackbone(nn.Module):
    """A frozen open_clip model with the encoders CLIP-IQA needs.

    Always in eval mode (RN50 has BatchNorm) and without gradients. A model that fine-tunes
    parts takes a ``private_copy()`` and ``unfreeze``s parts of that; the shared instance
    never changes. Not meant to be saved in our checkpoints: archs hold it outside their
    module tree.
    """

    def __init__(self, model, name='', source='', quick_gelu=None):
        super().__init__()
        self.model = model
        self.name = name
        self.source = source
        self.quick_gelu = quick_gelu  # the activation it was built with (recorded in our checkpoints)
        self.load_info = {'source': source, 'format': '', 'quick_gelu': quick_gelu, 'quick_gelu_reason': 'given'}
        self.requires_grad_(False)
        self.eval()
        self._text_cache = {}
        self._variants = {}  # (device, dtype) -> shared copy, see variant()
        self.exclusive = False  # a private_copy(): its owner may train parts of it
        self.tokenizer = open_clip.get_tokenizer(name) if name in open_clip.list_models() else open_clip.tokenize
        visual = model.visual
        if isinstance(visual, ModifiedResNet):
            self._image_forward = resnet_forward
        elif isinstance(visual, VisionTransformer):
            self._image_forward = vit_forward
        else:
            raise ClipLoadError(f'CLIP {name}: image tower {type(visual).__name__} is not supported '
                                '(ResNet with attention pool, or ViT)', 'clip_model')
        # The text tower lives on the model itself (CLIP) or in .text (CustomTextCLIP).
        self._text = model.text if hasattr(model, 'text') else model

    def train(self, mode=True):
        # Frozen CLIP stays in eval mode whatever its owners do (BatchNorm statistics must not move).
        return super().train(False)

    @property
    def device(self):
        return self.model.logit_scale.device

    @property
    def dtype(self):
        return self.model.logit_scale.dtype

    @property
    def embed_dim(self):
        return self._text.text_projection.shape[-1] if not isinstance(self._text.text_projection, nn.Linear) \
            else self._text.text_projection.out_features

    @property
    def text_width(self):
        return self._text.token_embedding.weight.shape[1]

    @property
    def context_length(self):
        return self._text.positional_embedding.shape[0]

    def logit_scale(self):
        """exp(logit_scale) as a 0-dim tensor (100 for OpenAI weights), read from the weights."""
        return self.model.logit_scale.exp().reshape(())

    def normalize(self, images):
        """(N, 3, H, W) RGB in [0, 1] -> CLIP-normalized."""
        mean = torch.tensor(CLIP_MEAN, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def encode_image(self, images, keep_pos_embed=False, normalize_features=True, precision='fp32'):
        """CLIP-normalized images (N, 3, H, W), any H and W -> features (N, D), unit norm by default.

        precision: 'fp32' (the reference), 'fp32-fused' (folded ResNet trunk), 'bf16' or 'fp16'
        (CUDA only) for the heavy layers; see ``clip_precision``. Features come out in fp32.
        """
        check_precision(precision, images.device)
        if precision != 'fp32':
            images = images.float()  # the trunk casts once, after folding; the pool reads fp32
            feats = self._image_forward(self.model.visual, images, keep_pos_embed, precision)
            with full_precision(images.device):
                return F.normalize(feats.float(), dim=-1) if normalize_features else feats.float()
        feats = self._image_forward(self.model.visual, images.to(self.dtype), keep_pos_embed)
        return F.normalize(feats, dim=-1) if normalize_features else feats

    # --- text
    def tokenize(self, texts):
        """List of strings -> token ids (M, context_length)."""
        return self.tokenizer(list(texts)).to(self.device)

    def encode_text(self, texts):
        """List of M prompts -> unit-norm features (M, D), computed now (no cache)."""
        return self.model.encode_text(self.tokenize(texts), normalize=True)

    def text_features(self, texts):
        """Unit-norm features (M, D) of fixed prompts, computed once per device and dtype and cached."""
        key = (tuple(texts), self.device, self.dtype)
        feats = self._text_cache.get(key)
        if feats is None:
            # Never an inference tensor (scoring may run under inference_mode): training reuses the cache.
            with torch.inference_mode(False), torch.no_grad():
                feats = self.encode_text(texts)
            self._text_cache[key] = feats
        return feats

    def token_embedding(self, tokens):
        """Token ids (M, L) -> input embeddings (M, L, width), for learned prompts."""
        return self._text.token_embedding(tokens)

    def encode_text_embeddings(self, embeddings, eot_index, precision='fp32'):
        """Text features from input embeddings (M, L, width) with the EOT token at ``eot_index`` (M,).

        Same computation as CLIP's text tower: + positional embedding -> causal transformer
        -> ln_final -> EOT token -> projection. Returns unit-norm (M, D). With a low
        ``precision`` the transformer blocks run under autocast on CUDA, the rest in fp32 (on
        CPU the text tower stays fp32: its bf16 backward measured 1.7x slower than fp32).
        """
        text = self._text
        cast_dtype = text.transformer.get_cast_dtype()
        x = embeddings.to(cast_dtype) + text.positional_embedding.to(cast_dtype)
        if compute_dtype(precision) != torch.float32 and x.device.type == 'cuda':
            with autocast(precision, x.device):
                x = text.transformer(x, attn_mask=text.attn_mask)
            with full_precision(x.device):
                return self._text_head(x.float(), eot_index)
        x = text.transformer(x, attn_mask=text.attn_mask)
        return self._text_head(x, eot_index)

    def _text_head(self, x, eot_index):
        """Transformer output (M, L, width) -> unit-norm features (M, D): ln_final, EOT token, projection."""
        text = self._text
        x = text.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), eot_index]
        proj = text.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return F.normalize(x, dim=-1)

    def _apply(self, fn, recurse=True):
        # Moving or casting the model makes cached text features stale.
        self._text_cache.clear()
        return super()._apply(fn, recurse)

    def variant(self, fn):
        """The shared instance for the device and dtype that ``fn`` (a ``Module._apply`` function) converts to.

        Models that move to another device get a copy for that device, shared by every model
        there, instead of dragging the one instance away from the models that still use it.
        An instance with fine-tuned parts belongs to its model and moves itself.
        """
        probe = fn(torch.zeros((), dtype=self.dtype, device=self.device))
        if self.exclusive:
            self._apply(fn)
            return self
        key = (probe.device, probe.dtype)
        if key == (self.device, self.dtype):
            return self
        if key not in self._variants:
            clone = self._detached_copy()
            clone._variants = self._variants  # all variants share one table
            clone._apply(fn)
            self._variants[key] = clone
            self._variants.setdefault((self.device, self.dtype), self)
        return self._variants[key]

    def _detached_copy(self):
        """A deep copy of the model without the shared tables (variants, text cache)."""
        clone = copy.copy(self)
        clone.__dict__ = {k: v for k, v in self.__dict__.items() if k not in ('_variants', '_text_cache')}
        clone = copy.deepcopy(clone)
        clone._variants, clone._text_cache = {}, {}
        return clone

    def private_copy(self):
        """A deep copy that belongs to one model, for fine-tuning (copy-on-unfreeze).

        The shared instance from ``load_clip`` never changes: its weights, requires_grad flags
        and text cache stay what every other model relies on. The copy moves with its owner.
        """
        clone = self._detached_copy()
        clone.exclusive = True
        return clone

    @property
    def text_trains(self):
        """Whether any text-tower parameter (everything outside ``visual``) is trainable."""
        return any(p.requires_grad for name, p in self.model.named_parameters() if not name.startswith('visual.'))

    def unfreeze(self, prefixes, keep_frozen=()):
        """Let the parameters under these dotted prefixes of the open_clip model train (e.g. 'visual.layer4').

        Parameters whose name ends with one of ``keep_frozen`` stay frozen (the positional
        embedding when the forward never uses it: DDP refuses parameters without gradients).
        Returns {prefix: module}; the caller registers these modules so that they are saved.
        Only on a ``private_copy()``: the shared instance must never change.
        """
        if not self.exclusive:
            raise RuntimeError('unfreeze() on the shared CLIP would change every model that uses it: '
                               'call it on clip.private_copy()')
        parts = {}
        for prefix in prefixes:
            try:
                module = self.model.get_submodule(prefix)
            except AttributeError:
                raise ClipLoadError(f'CLIP {self.name} has no part {prefix!r} to fine-tune') from None
            for name, param in module.named_parameters():
                param.requires_grad_(not name.endswith(tuple(keep_frozen)))
            parts[prefix] = module
        self._text_cache.clear()
        return parts
