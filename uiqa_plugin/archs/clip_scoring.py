"""Plain functions shared by the CLIP-IQA family: antonym-pair probabilities and their aggregation."""
import torch


def at_least_fp32(x):
    """``x`` in fp32 if it is a 16-bit float tensor; fp32/fp64 tensors and Python numbers unchanged."""
    return x.float() if torch.is_tensor(x) and x.dtype in (torch.float16, torch.bfloat16) else x


def pair_logit_differences(image_features, text_features, logit_scale):
    """scale * (cos(img, t_pos) - cos(img, t_neg)) for every pair.

    image_features: (N, D) unit norm; text_features: (2K, D) unit norm ordered
    pos0, neg0, pos1, neg1, ... (or (N, 2K, D) for per-sample text). Returns (N, K) in fp32
    (fp64 for fp64 inputs) whatever the inputs' dtype and any enclosing autocast: a
    difference of two nearby cosines, times ~100, loses most of its digits in 16-bit floats.
    """
    with torch.autocast(image_features.device.type, enabled=False):
        image_features, text_features = at_least_fp32(image_features), at_least_fp32(text_features)
        if text_features.dim() == 2:
            cos = image_features @ text_features.t()
        else:
            cos = torch.einsum('nd,nmd->nm', image_features, text_features)
        cos = cos.reshape(cos.shape[0], -1, 2)
        return at_least_fp32(logit_scale) * (cos[..., 0] - cos[..., 1])


def pair_probabilities(image_features, text_features, logit_scale):
    """Softmax probability of the positive prompt of each pair, (N, K) in [0, 1].

    Equal to softmax([s*cos0, s*cos1])[0] = sigmoid(s * (cos0 - cos1)).
    """
    return torch.sigmoid(pair_logit_differences(image_features, text_features, logit_scale))


def aggregate_phrasings(logit_differences, group_index, num_groups, mode='mean_prob'):
    """Average the K phrasings of each attribute: (N, K) logit differences -> (N, P) scores in [0, 1].

    group_index: (K,) long tensor, the attribute of each phrasing. ``mean_prob`` averages
    probabilities (the pyiqa ensemble); ``mean_logit`` takes the sigmoid of the mean logit difference.
    """
    if mode not in ('mean_prob', 'mean_logit'):
        raise ValueError(f"ensemble mode must be 'mean_prob' or 'mean_logit', got {mode!r}")
    values = at_least_fp32(logit_differences)
    values = torch.sigmoid(values) if mode == 'mean_prob' else values
    if num_groups == values.shape[1]:  # one phrasing each: nothing to average
        out = values
    else:
        counts = torch.bincount(group_index, minlength=num_groups).to(values.dtype)
        out = values.new_zeros(values.shape[0], num_groups).index_add_(1, group_index, values) / counts
    return out if mode == 'mean_prob' else torch.sigmoid(out)
