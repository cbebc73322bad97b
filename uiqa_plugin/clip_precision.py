"""Fast paths of the CLIP towers (``precision: fp32 | fp32-fused | bf16 | fp16``).

``fp32`` is the reference computation, untouched. ``fp32-fused`` is the same arithmetic
type with the ResNet trunk folded and laid out as below (BatchNorm in the convolutions,
channels_last, the single-query attention pool): no rounding to fewer bits, only another
order of the same float32 operations (features within ~4e-7 relative of ``fp32`` for RN50),
about 1.7x faster on CPUs; ViT towers run exactly as ``fp32``. ``bf16`` / ``fp16`` run the
heavy part of the image tower in the low dtype and keep the numerically sensitive parts in fp32:

- ResNet trunk: BatchNorm folded into the convolutions (CLIP's BatchNorm is frozen, in
  eval mode), weights cast once and cached, activations ``channels_last``. The first
  convolution (3 input channels, ~0.2% of the FLOPs) stays fp32 on the fp32 image: its
  output is a small image-dependent part on top of a large constant that BatchNorm then
  removes, so 8-bit mantissas in its input or weights cost more accuracy than all other
  layers together. A trunk with trainable parts (``finetune_clip``) runs its own modules
  under autocast instead, so gradients reach them.
- Attention pool: in fp32, for the one query token only. With a single query the keys
  and values of all H*W tokens need not be formed: ``q . (W_k x_t + b_k)`` is
  ``(W_k^T q) . x_t`` plus a constant that the softmax cancels, and the attention-weighted
  values are ``W_v (sum_t a_t x_t) + b_v`` because the weights sum to one. This is
  ~0.1 GFLOP instead of ~13 GFLOP for RN50 at 1024 x 768, so fp32 costs nothing here.
- ViT: the transformer blocks under autocast; pooling, ``ln_post`` and the projection in fp32.
- Text: fixed prompts are encoded once in fp32 and cached; learned prompts (trained every
  step) run the transformer blocks under autocast on CUDA, ``ln_final`` and the projection
  in fp32. On CPU the text tower stays fp32: autocast made its forward + backward 1.7x slower.

The logit differences and probabilities (``clip_scoring``) are always computed in fp32.
fp16 needs a CUDA device: CPU autocast in fp16 is emulated on most CPUs and slower than
fp32; use bf16 there (fast on CPUs with AVX512-BF16 or AMX).
"""
import contextlib
import itertools

import torch
import torch.nn.functional as F

PRECISIONS = ('fp32', 'fp32-fused', 'bf16', 'fp16')
_DTYPES = {'fp32': torch.float32, 'fp32-fused': torch.float32, 'bf16': torch.bfloat16, 'fp16': torch.float16}


def check_precision(precision, device=None):
    """Validate a precision name (and, given a device, that it runs there). Returns the name."""
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if precision == 'fp16' and device is not None and torch.device(device).type != 'cuda':
        raise ValueError(f"precision 'fp16' needs a CUDA device (got {torch.device(device).type}): CPU fp16 is "
                         "slower than fp32 on most CPUs. Use precision 'bf16' on CPU.")
    return precision


def compute_dtype(precision):
    """torch dtype of the heavy computations for a precision name."""
    return _DTYPES[check_precision(precision)]


def autocast(precision, device):
    """Autocast context for ``precision`` on ``device`` (a no-op for the fp32 precisions)."""
    if _DTYPES[check_precision(precision, device)] == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=_DTYPES[precision])


def full_precision(device):
    """Context that turns any enclosing autocast off (for the parts kept in fp32)."""
    return torch.autocast(torch.device(device).type, enabled=False)


# ----------------------------------------------------------------------------- ResNet trunk

def _fold(conv, bn, dtype):
    """Conv2d (no bias) followed by eval-mode BatchNorm2d -> one conv: (weight, bias, stride, padding)."""
    with torch.no_grad():
        scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)
        weight = conv.weight.float() * scale[:, None, None, None]
        bias = bn.bias.float() - bn.running_mean.float() * scale
    weight = weight.to(dtype).contiguous(memory_format=torch.channels_last)
    return weight, bias.to(dtype), conv.stride, conv.padding


def _conv(x, folded):
    weight, bias, stride, padding = folded
    return F.conv2d(x, weight, bias, stride, padding)


def _state_key(module, dtype):
    tensors = itertools.chain(module.parameters(), module.buffers())
    return (dtype,) + tuple((t.device, t.data_ptr(), t._version) for t in tensors)


def folded_resnet(visual, dtype):
    """The BatchNorm-folded trunk of an open_clip ``ModifiedResNet`` in ``dtype``, built once and cached.

    The cache lives on ``visual`` and is rebuilt when any of its tensors changes (a load,
    an optimizer step, a move to another device): its key holds their pointers and versions.
    """
    key = _state_key(visual, dtype)
    cached = visual.__dict__.get('_uiqa_folded')
    if cached is not None and cached[0] == key:
        return cached[1]
    # Plain tensors even when built under inference_mode: a later forward may need gradients w.r.t. its input.
    with torch.inference_mode(False), torch.no_grad():
        blocks = []
        for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
            for b in layer:
                down = _fold(b.downsample[1], b.downsample[2], dtype) if b.downsample is not None else None
                blocks.append((_fold(b.conv1, b.bn1, dtype), _fold(b.conv2, b.bn2, dtype), b.stride,
                               _fold(b.conv3, b.bn3, dtype), down))
        stem = [_fold(visual.conv1, visual.bn1, torch.float32), _fold(visual.conv2, visual.bn2, dtype),
                _fold(visual.conv3, visual.bn3, dtype)]
    trunk = (stem, visual.avgpool.kernel_size, blocks)
    visual.__dict__['_uiqa_folded'] = (key, trunk)
    return trunk


def run_folded_resnet(trunk, x):
    """(N, 3, H, W) -> (N, C, H/32, W/32) feature map through a ``folded_resnet`` trunk (its low dtype,
    channels_last)."""
    stem, stem_pool, blocks = trunk
    x = _conv(x.float().contiguous(memory_format=torch.channels_last), stem[0]).relu_()  # fp32, see above
    x = x.to(stem[1][0].dtype)
    for conv in stem[1:]:
        x = _conv(x, conv).relu_()
    x = F.avg_pool2d(x, stem_pool)
    for conv1, conv2, stride, conv3, down in blocks:
        out = _conv(_conv(x, conv1).relu_(), conv2).relu_()
        if stride > 1:
            out = F.avg_pool2d(out, stride)
            x = F.avg_pool2d(x, stride) if down is not None else x
        out = _conv(out, conv3)
        identity = _conv(x, down) if down is not None else x
        x = out.add_(identity).relu_()
    return x


def resnet_trunk_low_precision(visual, x, precision):
    """The ResNet trunk (stem and four layers) in ``precision``'s dtype: folded when frozen, autocast when it trains."""
    dtype = compute_dtype(precision)
    trains = torch.is_grad_enabled() and any(p.requires_grad for p in visual.parameters())
    if not trains:
        return run_folded_resnet(folded_resnet(visual, dtype), x)
    with autocast(precision, x.device):  # a no-op for fp32-fused
        x = visual.stem(x.contiguous(memory_format=torch.channels_last))
        return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))


def attention_pool_query(pool, feature_map, positional=None):
    """CLIP's attention pool for the mean-token query only, in fp32, without forming keys and values.

    feature_map: (N, C, H, W) in any dtype; positional: optional (1 + H*W, C) term added to
    the tokens (mean token first). Same result as ``clip.model.attention_pool`` up to
    float rounding. Returns (N, output_dim) in fp32.
    """
    with full_precision(feature_map.device):
        n, c = feature_map.shape[:2]
        tokens = feature_map.float().flatten(2).transpose(1, 2)  # (N, HW, C)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)  # (N, T, C)
        if positional is not None:
            tokens = tokens + positional.float()[None]
        heads = pool.num_heads
        head_dim = c // heads
        q = F.linear(tokens[:, 0], pool.q_proj.weight, pool.q_proj.bias) * head_dim ** -0.5
        # Per head h: logit_t = q_h . (W_k,h x_t + b_k,h) = (W_k,h^T q_h) . x_t + const (dropped: softmax).
        query_in_tokens = torch.einsum('nhd,hdc->nhc', q.view(n, heads, head_dim),
                                       pool.k_proj.weight.view(heads, head_dim, c))
        attn = torch.einsum('nhc,ntc->nht', query_in_tokens, tokens).softmax(dim=-1)
        # Per head: sum_t a_t (W_v,h x_t + b_v,h) = W_v,h (sum_t a_t x_t) + b_v,h, the weights summing to 1.
        mixed = torch.einsum('nht,ntc->nhc', attn, tokens)
        values = torch.einsum('nhc,hdc->nhd', mixed, pool.v_proj.weight.view(heads, head_dim, c))
        values = values + pool.v_proj.bias.view(heads, head_dim)
        return F.linear(values.reshape(n, c), pool.c_proj.weight, pool.c_proj.bias)
