"""Phrasing sensitivity: how much an attribute's ranking of images depends on the prompt wording.

Each phrasing of an attribute is scored as its own single-pair attribute (one image pass and
one text batch for all of them); the Spearman correlation between phrasings across the images
says whether the attribute is stable (high) or wording-dependent (low).
"""
from dataclasses import dataclass, field

import numpy as np

from uiqa_plugin.api import create_metric, score_paths
from uiqa_plugin.metrics.iqa_metric import calculate_srcc
from uiqa_plugin.perception.ensembles import split_phrasings


@dataclass
class PhrasingScores:
    """attribute: the Attribute; scores: (N, K) probability of phrasing k on image n; paths: the N images."""
    attribute: object
    scores: np.ndarray
    paths: list = field(default_factory=list)

    @property
    def phrasings(self):
        return list(self.attribute.pairs)


def score_phrasings(attributes, inputs, clip_model='RN50', clip_pretrained='openai', device=None, batch_size=1,
                    strict=False, progress=True, **metric_kwargs):
    """Score every phrasing of every attribute on the images; returns ([PhrasingScores], failures).

    attributes: a list of Attribute objects (e.g. ``with_ensembles(resolve_attributes('feel'))``).
    """
    singles = [split_phrasings(attr) for attr in attributes]
    metric = create_metric([s for group in singles for s in group], clip_model=clip_model,
                           clip_pretrained=clip_pretrained, device=device, **metric_kwargs)
    result = score_paths(metric, inputs, batch_size=batch_size, strict=strict, progress=progress)
    paths = [row['path'] for row in result.rows]
    out = []
    for attr, group in zip(attributes, singles):
        scores = np.array([[row[s.name] for s in group] for row in result.rows], dtype=np.float64)
        out.append(PhrasingScores(attr, scores.reshape(len(paths), len(group)), paths))
    return out, result.failures


def srcc_matrix(scores):
    """(N, K) scores -> (K, K) Spearman correlations between phrasings (NaN where undefined)."""
    k = scores.shape[1]
    matrix = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            matrix[i, j] = matrix[j, i] = calculate_srcc(scores[:, i], scores[:, j])
    return matrix


def sensitivity_tables(phrasing_scores):
    """Summaries of ``score_phrasings`` output.

    Returns (per_phrasing, per_attribute):
    per_phrasing rows {'attribute', 'phrasing', 'positive', 'negative', 'mean', 'std', 'srcc_paper',
    'srcc_others'}: the score's mean/std over images, its SRCC with phrasing 0 (the paper's) and its
    mean SRCC with the other phrasings;
    per_attribute rows {'attribute', 'phrasings', 'images', 'mean_srcc', 'min_srcc', 'srcc_paper_ensemble',
    'spread'}: mean/min pairwise SRCC, SRCC of the paper pair with the mean over phrasings, and the mean
    over images of the max - min score across phrasings.
    """
    per_phrasing, per_attribute = [], []
    for item in phrasing_scores:
        scores, name = item.scores, item.attribute.name
        k = scores.shape[1]
        enough = scores.shape[0] >= 2
        matrix = srcc_matrix(scores) if enough and k > 1 else np.full((k, k), np.nan)
        for j, (pos, neg) in enumerate(item.phrasings):
            others = [matrix[j, i] for i in range(k) if i != j]
            per_phrasing.append({
                'attribute': name, 'phrasing': j, 'positive': pos, 'negative': neg,
                'mean': float(scores[:, j].mean()) if scores.size else float('nan'),
                'std': float(scores[:, j].std()) if scores.size else float('nan'),
                'srcc_paper': float(matrix[j, 0]) if k > 1 else float('nan'),
                'srcc_others': float(np.nanmean(others)) if others and not np.all(np.isnan(others)) else float('nan'),
            })
        upper = matrix[np.triu_indices(k, 1)]
        finite = upper[np.isfinite(upper)]
        paper_vs_mean = calculate_srcc(scores[:, 0], scores.mean(axis=1)) if enough and k > 1 else float('nan')
        per_attribute.append({
            'attribute': name, 'phrasings': k, 'images': int(scores.shape[0]),
            'mean_srcc': float(finite.mean()) if finite.size else float('nan'),
            'min_srcc': float(finite.min()) if finite.size else float('nan'),
            'srcc_paper_ensemble': float(paper_vs_mean),
            'spread': float((scores.max(axis=1) - scores.min(axis=1)).mean()) if scores.size else float('nan'),
        })
    return per_phrasing, per_attribute


def phrasing_scores_table(phrasing_scores):
    """One wide row per image: ``path`` and ``<attribute>[k]``, the score of phrasing k -> (rows, columns)."""
    columns = ['path']
    for item in phrasing_scores:
        columns += [f'{item.attribute.name}[{k}]' for k in range(item.scores.shape[1])]
    rows = []
    for n, path in enumerate(phrasing_scores[0].paths if phrasing_scores else []):
        row = {'path': path}
        for item in phrasing_scores:
            row.update({f'{item.attribute.name}[{k}]': float(v) for k, v in enumerate(item.scores[n])})
        rows.append(row)
    return rows, columns
