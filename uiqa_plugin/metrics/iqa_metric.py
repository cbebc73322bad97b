"""Dataset-level IQA metrics: rank and linear correlations, errors, 2AFC agreement, bootstrap CIs.

All metrics take two 1-D array-likes of the same length (``pred``: model scores, ``target``:
human ratings such as MOS; a trailing singleton axis, e.g. ``[N, 1]``, is accepted) and
return a Python float. They are registered in BasicSR's ``METRIC_REGISTRY`` under their
function names and accept (and ignore) extra keyword arguments, because BasicSR passes the
whole option dict of a metric (``better: higher`` ...) to the function.

Degenerate input policy (the same for every metric):

- fewer than 2 samples, a length mismatch, more than one non-singleton axis, or a NaN/inf
  value -> ``ValueError`` naming the argument, the problem and the first bad index;
- constant ``pred`` or ``target`` -> correlations (SRCC, KRCC, PLCC, 2AFC) are ``nan`` and a
  ``DegenerateInputWarning`` is issued; errors (RMSE, MAE) are still computed.

Conventions: SRCC is Pearson's r of average ranks (ties share their mean rank); KRCC is
Kendall's tau-b; ``*_logistic`` metrics first map ``pred`` onto the scale of ``target``
with the 4-parameter logistic of VQEG/UIQA (see :func:`fit_logistic`); SRCC and KRCC are
invariant to that monotonic map, so they are computed on raw scores.
"""
import warnings
from collections.abc import Mapping

import numpy as np
from scipy import optimize, special, stats

from basicsr.utils.registry import METRIC_REGISTRY

__all__ = [
    'DegenerateInputWarning', 'calculate_srcc', 'calculate_krcc', 'calculate_plcc', 'calculate_plcc_logistic',
    'calculate_rmse', 'calculate_mae', 'calculate_rmse_logistic', 'calculate_mae_logistic',
    'calculate_2afc_accuracy', 'logistic_4p', 'fit_logistic', 'compute_metrics', 'bootstrap_ci', 'METRIC_FUNCTIONS'
]


class DegenerateInputWarning(RuntimeWarning):
    """A metric is undefined for this input (e.g. constant scores) and was returned as NaN."""


# ----------------------------------------------------------------------------- validation


def _as_vector(values, name):
    if hasattr(values, 'detach'):  # torch tensor, possibly on GPU or requiring grad
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f'{name}: cannot convert to a float array ({error})') from None
    if array.ndim > 1:
        squeezed = array.reshape([s for s in array.shape if s != 1] or [1])
        if squeezed.ndim != 1:
            raise ValueError(f'{name}: expected a 1-D array of scores, got shape {array.shape}')
        array = squeezed
    elif array.ndim == 0:
        raise ValueError(f'{name}: expected a 1-D array of scores, got a scalar')
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(f'{name}: {int(bad.sum())} NaN/inf value(s), first at index {first} ({array[first]})')
    return array


def _check_pair(pred, target):
    """Validate and convert ``pred``, ``target`` into float64 vectors of equal length >= 2."""
    pred = _as_vector(pred, 'pred')
    target = _as_vector(target, 'target')
    if pred.shape != target.shape:
        raise ValueError(f'pred has {pred.size} values but target has {target.size}: they must pair up one to one')
    if pred.size < 2:
        raise ValueError(f'need at least 2 samples to compare pred with target, got {pred.size}')
    return pred, target


def _constant_warning(array, name, metric):
    """Warn and return True if ``array`` is constant (the metric is then NaN)."""
    if np.all(array == array[0]):
        warnings.warn(
            f'{metric}: {name} is constant ({array[0]:g} for all {array.size} samples), '
            'the correlation is undefined and reported as NaN',
            DegenerateInputWarning,
            stacklevel=3)
        return True
    return False


def _degenerate(pred, target, metric):
    # Evaluate both so that the user hears about both problems at once.
    constant_pred = _constant_warning(pred, 'pred', metric)
    constant_target = _constant_warning(target, 'target', metric)
    return constant_pred or constant_target


# ----------------------------------------------------------------------------- core math on checked vectors


def _pearson(x, y):
    xc = x - x.mean()
    yc = y - y.mean()
    r = np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    return float(np.clip(r, -1.0, 1.0))


def _srcc(pred, target):
    if _degenerate(pred, target, 'SRCC'):
        return float('nan')
    return _pearson(stats.rankdata(pred), stats.rankdata(target))


def _krcc(pred, target):
    if _degenerate(pred, target, 'KRCC'):
        return float('nan')
    return float(stats.kendalltau(pred, target, variant='b').statistic)


def _plcc(pred, target):
    if _degenerate(pred, target, 'PLCC'):
        return float('nan')
    return _pearson(pred, target)


def _rmse(pred, target):
    return float(np.sqrt(np.mean((pred - target)**2)))


def _mae(pred, target):
    return float(np.mean(np.abs(pred - target)))


# ----------------------------------------------------------------------------- logistic mapping


def logistic_4p(x, b1, b2, b3, b4):
    """The 4-parameter logistic ``b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))``.

    ``b1``/``b2`` are the upper/lower asymptotes, ``b3`` the midpoint, ``|b4|`` the scale.
    """
    scale = np.maximum(np.abs(b4), np.finfo(np.float64).tiny)
    return b2 + (b1 - b2) * special.expit((np.asarray(x, dtype=np.float64) - b3) / scale)


def _fit_logistic(pred, target):
    if np.all(pred == pred[0]):
        # No mapping can use a constant score: the best one predicts the mean rating.
        warnings.warn(
            f'logistic fit: pred is constant ({pred[0]:g}), mapping every sample to the mean target',
            DegenerateInputWarning,
            stacklevel=3)
        mean = float(target.mean())
        return np.array([mean, mean, float(pred[0]), 0.5]), np.full_like(target, mean)
    if np.all(target == target[0]):  # the flat curve b1 = b2 = target fits exactly
        return np.array([target[0], target[0], pred.mean(), 0.5]), target.copy()
    if pred.size < 4:
        warnings.warn(
            f'logistic fit: {pred.size} samples cannot determine 4 parameters; using a least-squares linear map',
            RuntimeWarning,
            stacklevel=3)
        return _linear_fallback(pred, target)
    initial = [target.max(), target.min(), pred.mean(), 0.5]
    try:
        with warnings.catch_warnings():
            # OptimizeWarning only says the covariance is unknown; we do not use it.
            warnings.simplefilter('ignore', optimize.OptimizeWarning)
            params, _ = optimize.curve_fit(logistic_4p, pred, target, p0=initial, maxfev=10000)
        fitted = logistic_4p(pred, *params)
        if not np.all(np.isfinite(fitted)):
            raise RuntimeError('the fitted curve is not finite')
    except (RuntimeError, ValueError) as error:
        warnings.warn(
            f'logistic fit failed ({error}); falling back to a least-squares linear map', RuntimeWarning, stacklevel=3)
        return _linear_fallback(pred, target)
    return params, fitted


def _linear_fallback(pred, target):
    slope, intercept = np.polyfit(pred, target, 1)
    return np.full(4, np.nan), slope * pred + intercept


def _plcc_after_fit(pred, target, fitted):
    # Judge degeneracy on the inputs: a flat fitted curve is a consequence, not the cause.
    if _degenerate(pred, target, 'PLCC (logistic)'):
        return float('nan')
    if np.all(fitted == fitted[0]):
        warnings.warn('PLCC (logistic): the fitted curve is flat, the correlation is undefined and reported as NaN',
                      DegenerateInputWarning,
                      stacklevel=3)
        return float('nan')
    return _pearson(fitted, target)


def _rmse_after_fit(pred, target, fitted):
    return _rmse(fitted, target)


def _mae_after_fit(pred, target, fitted):
    return _mae(fitted, target)


def fit_logistic(pred, target):
    """Fit the 4-parameter logistic mapping ``pred`` onto ``target`` (least squares).

    Args:
        pred, target: 1-D array-likes of equal length N >= 2.

    Returns:
        (params, fitted): ``params`` = array [b1, b2, b3, b4] of :func:`logistic_4p`, fitted by
        ``scipy.optimize.curve_fit`` from the initial guess [max target, min target, mean pred,
        0.5]; ``fitted`` = the mapped scores, float64 [N].

    Fallbacks: with fewer than 4 samples, or if the fit does not converge (or gives a
    non-finite curve), a least-squares line is used instead, ``params`` is all NaN and a
    RuntimeWarning says so. If ``pred`` is constant, every sample maps to the mean target
    (with a DegenerateInputWarning); if ``target`` is constant, to that constant.
    """
    return _fit_logistic(*_check_pair(pred, target))


# ----------------------------------------------------------------------------- registered metrics


@METRIC_REGISTRY.register()
def calculate_srcc(pred, target, **kwargs):
    """Spearman rank-order correlation (ties get their average rank), in [-1, 1]."""
    return _srcc(*_check_pair(pred, target))


@METRIC_REGISTRY.register()
def calculate_krcc(pred, target, **kwargs):
    """Kendall rank-order correlation, tau-b (corrected for ties), in [-1, 1]."""
    return _krcc(*_check_pair(pred, target))


@METRIC_REGISTRY.register()
def calculate_plcc(pred, target, **kwargs):
    """Pearson linear correlation of the raw scores, in [-1, 1]."""
    return _plcc(*_check_pair(pred, target))


@METRIC_REGISTRY.register()
def calculate_plcc_logistic(pred, target, **kwargs):
    """Pearson linear correlation after the 4-parameter logistic fit (:func:`fit_logistic`)."""
    pred, target = _check_pair(pred, target)
    return _plcc_after_fit(pred, target, _fit_logistic(pred, target)[1])


@METRIC_REGISTRY.register()
def calculate_rmse(pred, target, **kwargs):
    """Root mean squared error of the raw scores (same unit as the inputs)."""
    return _rmse(*_check_pair(pred, target))


@METRIC_REGISTRY.register()
def calculate_mae(pred, target, **kwargs):
    """Mean absolute error of the raw scores (same unit as the inputs)."""
    return _mae(*_check_pair(pred, target))


@METRIC_REGISTRY.register()
def calculate_rmse_logistic(pred, target, **kwargs):
    """RMSE after the 4-parameter logistic fit, in the unit of ``target``."""
    pred, target = _check_pair(pred, target)
    return _rmse_after_fit(pred, target, _fit_logistic(pred, target)[1])


@METRIC_REGISTRY.register()
def calculate_mae_logistic(pred, target, **kwargs):
    """MAE after the 4-parameter logistic fit, in the unit of ``target``."""
    pred, target = _check_pair(pred, target)
    return _mae_after_fit(pred, target, _fit_logistic(pred, target)[1])


def _tie_pairs(values):
    counts = np.unique(values, return_counts=True)[1]
    return int(np.sum(counts * (counts - 1) // 2))


def _2afc(pred, target):
    n_pairs = pred.size * (pred.size - 1) // 2
    pred_ties, target_ties = _tie_pairs(pred), _tie_pairs(target)
    comparable = n_pairs - target_ties  # pairs whose human ratings differ
    if comparable == 0:
        _constant_warning(target, 'target', '2AFC')
        return float('nan')
    if pred_ties == n_pairs:  # constant pred: every comparable pair is a tie, worth 0.5
        return 0.5
    # accuracy = (C + T/2) / comparable = 1/2 + (C - D) / (2 comparable), where C, D, T count
    # the comparable pairs ordered alike, oppositely, or tied by pred. C - D is Kendall's S,
    # recovered from tau-b (O(n log n) in scipy) instead of an O(n^2) pair table.
    tau_b = stats.kendalltau(pred, target, variant='b').statistic
    s = np.rint(tau_b * np.sqrt(float(n_pairs - pred_ties) * float(n_pairs - target_ties)))
    return float(0.5 + s / (2.0 * comparable))


@METRIC_REGISTRY.register()
def calculate_2afc_accuracy(pred, target, **kwargs):
    """Two-alternative forced-choice agreement with human ratings, in [0, 1].

    Over all image pairs whose targets differ, the fraction where ``pred`` orders the pair
    the same way as ``target``; a pair tied in ``pred`` counts 0.5 (a coin flip). Pairs tied
    in ``target`` carry no preference and are left out. 0.5 is chance, 1 perfect agreement.
    NaN (with a DegenerateInputWarning) when every target is equal. O(n log n).
    """
    return _2afc(*_check_pair(pred, target))


# ----------------------------------------------------------------------------- helpers for models and reports

#: Short name -> metric function, as used by :func:`compute_metrics`.
METRIC_FUNCTIONS = {
    'srcc': calculate_srcc,
    'krcc': calculate_krcc,
    'plcc': calculate_plcc,
    'plcc_logistic': calculate_plcc_logistic,
    'rmse': calculate_rmse,
    'mae': calculate_mae,
    'rmse_logistic': calculate_rmse_logistic,
    'mae_logistic': calculate_mae_logistic,
    '2afc': calculate_2afc_accuracy,
}
#: What IQAModel's validation computes when ``val.metrics`` is left out.
DEFAULT_METRICS = {'srcc': {'type': 'calculate_srcc'}, 'plcc': {'type': 'calculate_plcc'}}
_ON_CHECKED = {
    calculate_srcc: _srcc,
    calculate_krcc: _krcc,
    calculate_plcc: _plcc,
    calculate_rmse: _rmse,
    calculate_mae: _mae,
    calculate_2afc_accuracy: _2afc,
}
_AFTER_LOGISTIC = {
    calculate_plcc_logistic: _plcc_after_fit,
    calculate_rmse_logistic: _rmse_after_fit,
    calculate_mae_logistic: _mae_after_fit,
}


def _resolve(name, spec):
    """Metric function for a short name, a registered name, or an option dict with ``type``."""
    key = spec.get('type') if isinstance(spec, Mapping) else spec
    if key is None:
        raise ValueError(f'metric {name!r}: option dict has no "type" key')
    if key in METRIC_FUNCTIONS:
        return METRIC_FUNCTIONS[key]
    if key in METRIC_REGISTRY:
        return METRIC_REGISTRY.get(key)
    raise ValueError(f'metric {name!r}: unknown metric {key!r}; short names are {sorted(METRIC_FUNCTIONS)}, '
                     f'registered ones {sorted(METRIC_REGISTRY.keys())}')


def compute_metrics(pred, target, names=('srcc', 'plcc')):
    """Compute several dataset-level metrics at once.

    Args:
        pred, target: 1-D array-likes of equal length N >= 2 (scores and human ratings).
        names: a sequence of metric names, each a short name (``'srcc'``, ``'plcc_logistic'``,
            ``'2afc'``, see ``METRIC_FUNCTIONS``) or a registered function name
            (``'calculate_srcc'``); or a BasicSR ``val.metrics`` mapping
            ``{label: {type: calculate_srcc, ...}}``, whose labels become the result keys.

    Returns:
        dict {name or label: float}, in the given order. The inputs are checked once and the
        logistic fit is shared by every ``*_logistic`` metric.
    """
    pred, target = _check_pair(pred, target)
    items = names.items() if isinstance(names, Mapping) else ((name, name) for name in names)
    results, fitted = {}, None
    for label, spec in items:
        fn = _resolve(label, spec)
        if fn in _ON_CHECKED:
            results[label] = _ON_CHECKED[fn](pred, target)
        elif fn in _AFTER_LOGISTIC:
            if fitted is None:
                fitted = _fit_logistic(pred, target)[1]
            results[label] = _AFTER_LOGISTIC[fn](pred, target, fitted)
        else:  # another registered metric: give it the option dict as BasicSR would
            options = {k: v for k, v in spec.items() if k != 'type'} if isinstance(spec, Mapping) else {}
            results[label] = float(fn(pred, target, **options))
    return results


def bootstrap_ci(metric_fn, pred, target, n_boot=1000, alpha=0.05, seed=0, progress=False):
    """Percentile bootstrap confidence interval of a dataset-level metric.

    Images are resampled with replacement (``n_boot`` resamples of size N) and ``metric_fn``
    is evaluated on each; the interval is the ``alpha/2`` and ``1 - alpha/2`` percentiles.

    Args:
        metric_fn: callable(pred, target) -> float, e.g. :func:`calculate_srcc`.
        pred, target: 1-D array-likes of equal length N >= 2.
        n_boot (int): number of resamples. alpha (float): in (0, 1); 0.05 gives a 95% interval.
        seed (int): seed of the resampling, so that intervals are reproducible.
        progress (bool): show a tqdm bar (useful for the slower logistic metrics).

    Returns:
        (low, high) floats. Resamples on which the metric is NaN (e.g. all draws of one image)
        are dropped with one warning stating how many; (nan, nan) if all are NaN.
    """
    pred, target = _check_pair(pred, target)
    if not 0 < alpha < 1:
        raise ValueError(f'alpha must be in (0, 1), got {alpha}')
    if int(n_boot) < 1:
        raise ValueError(f'n_boot must be a positive integer, got {n_boot}')
    rng = np.random.default_rng(seed)
    # One (n_boot, N) index table drawn at once; the metric itself is the costly part.
    indices = rng.integers(0, pred.size, size=(int(n_boot), pred.size))
    values = np.empty(int(n_boot))
    rows = indices
    if progress:
        from tqdm import tqdm
        rows = tqdm(indices, desc='bootstrap', unit='resample')
    with warnings.catch_warnings():
        # Degenerate resamples are expected now and then: count them instead of warning each.
        warnings.simplefilter('ignore', DegenerateInputWarning)
        warnings.simplefilter('ignore', RuntimeWarning)
        for k, index in enumerate(rows):
            values[k] = metric_fn(pred[index], target[index])
    undefined = int(np.isnan(values).sum())
    if undefined:
        warnings.warn(
            f'bootstrap: the metric was NaN on {undefined} of {values.size} resamples; they were left out',
            DegenerateInputWarning,
            stacklevel=2)
    if undefined == values.size:
        return float('nan'), float('nan')
    low, high = np.percentile(values[~np.isnan(values)], [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
