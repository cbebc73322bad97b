"""Dataset-level IQA metrics against values counted by hand."""
import itertools
import math

import numpy as np
import pytest
import torch

import uiqa_plugin  # noqa: F401  (before basicsr: installs the torchvision alias)
from uiqa_plugin.metrics import iqa_metric as M
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY

# A small table with one tie in each column, counted by hand below.
PRED = [1.0, 2.0, 2.0, 4.0, 5.0]
TARGET = [2.0, 1.0, 3.0, 3.0, 5.0]


def test_srcc_with_ties_by_hand():
    # Average ranks: pred (1, 2.5, 2.5, 4, 5), target (2, 1, 3.5, 3.5, 5); both have mean 3.
    # Deviations (-2, -.5, -.5, 1, 2) and (-1, -2, .5, .5, 2): cov 7.25, each sum of squares 9.5.
    assert M.calculate_srcc(PRED, TARGET) == pytest.approx(7.25 / 9.5, abs=1e-12)


def test_krcc_tau_b_by_hand():
    # Of the 10 pairs: 7 concordant, 1 discordant (0, 1), 1 tied in pred (1, 2), 1 tied in target (2, 3).
    # tau-b = (C - D) / sqrt((n0 - n_pred_ties)(n0 - n_target_ties)) = 6 / sqrt(9 * 9).
    assert M.calculate_krcc(PRED, TARGET) == pytest.approx(6 / 9, abs=1e-12)


def test_plcc_rmse_mae_by_hand():
    # Means 2.8 and 2.8; cov 7.8, sums of squares 10.8 and 8.8.
    assert M.calculate_plcc(PRED, TARGET) == pytest.approx(7.8 / math.sqrt(10.8 * 8.8), abs=1e-12)
    # Differences (-1, 1, -1, 1, 0).
    assert M.calculate_rmse(PRED, TARGET) == pytest.approx(math.sqrt(4 / 5), abs=1e-12)
    assert M.calculate_mae(PRED, TARGET) == pytest.approx(4 / 5, abs=1e-12)


def test_2afc_by_hand():
    # 9 pairs have different targets: 7 agree (1 each), 1 disagrees (0), 1 is tied in pred (0.5).
    assert M.calculate_2afc_accuracy(PRED, TARGET) == pytest.approx(7.5 / 9, abs=1e-12)
    assert M.calculate_2afc_accuracy([3, 2, 1], [1, 2, 3]) == 0.0
    assert M.calculate_2afc_accuracy([1, 2, 3], [10, 20, 30]) == 1.0


def _2afc_brute_force(pred, target):
    score = comparable = 0
    for i, j in itertools.combinations(range(len(pred)), 2):
        if target[i] == target[j]:
            continue
        comparable += 1
        if pred[i] == pred[j]:
            score += 0.5
        elif (pred[i] > pred[j]) == (target[i] > target[j]):
            score += 1
    return score / comparable


@pytest.mark.parametrize('n, seed', [(7, 0), (40, 1), (120, 2)])
def test_2afc_matches_pair_loop_with_many_ties(n, seed):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, 5, n).astype(float)
    target = rng.integers(0, 4, n).astype(float)
    assert M.calculate_2afc_accuracy(pred, target) == pytest.approx(_2afc_brute_force(pred, target), abs=1e-12)


def test_2afc_degenerate():
    assert M.calculate_2afc_accuracy([1, 1, 1, 1], [1, 2, 3, 4]) == 0.5  # constant pred: all coin flips
    with pytest.warns(M.DegenerateInputWarning, match='target is constant'):
        assert math.isnan(M.calculate_2afc_accuracy([1, 2, 3], [5, 5, 5]))


def test_logistic_fit_recovers_parameters():
    x = np.linspace(0, 1, 101)
    y = M.logistic_4p(x, 90.0, 10.0, 0.4, 0.08)
    params, fitted = M.fit_logistic(x, y)
    b1, b2, b3, b4 = params
    assert (b1, b2, b3, abs(b4)) == pytest.approx((90.0, 10.0, 0.4, 0.08), rel=1e-4)
    np.testing.assert_allclose(fitted, y, atol=1e-6)


def test_logistic_metrics_on_noisy_sigmoid():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, 400)
    noise = rng.normal(0, 2.0, x.size)
    y = M.logistic_4p(x, 100.0, 0.0, 5.0, 1.0) + noise
    params, _ = M.fit_logistic(x, y)
    assert params[:3] == pytest.approx([100.0, 0.0, 5.0], abs=1.5)
    # The fitted curve explains the data up to the noise, better than a straight line.
    assert M.calculate_rmse_logistic(x, y) == pytest.approx(np.sqrt(np.mean(noise**2)), rel=0.05)
    assert M.calculate_mae_logistic(x, y) == pytest.approx(np.mean(np.abs(noise)), rel=0.05)
    assert M.calculate_plcc_logistic(x, y) > M.calculate_plcc(x, y) + 0.02
    # Raw RMSE compares scores in [0, 10] with ratings in [0, 100].
    assert M.calculate_rmse(x, y) > 10 * M.calculate_rmse_logistic(x, y)


def test_logistic_fit_failure_falls_back_to_linear(monkeypatch):

    def fail(*args, **kwargs):
        raise RuntimeError('Optimal parameters not found')

    monkeypatch.setattr(M.optimize, 'curve_fit', fail)
    x = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([1.0, 3.0, 5.0, 8.0])
    with pytest.warns(RuntimeWarning, match='falling back to a least-squares linear map'):
        params, fitted = M.fit_logistic(x, y)
    assert np.isnan(params).all()
    # Least-squares line through these points: slope 2.3, intercept 0.8.
    np.testing.assert_allclose(fitted, 2.3 * x + 0.8, atol=1e-12)


def test_logistic_fit_small_sample_and_constant_target():
    with pytest.warns(RuntimeWarning, match='3 samples cannot determine 4 parameters'):
        params, fitted = M.fit_logistic([0.0, 1.0, 2.0], [1.0, 2.0, 6.0])
    np.testing.assert_allclose(fitted, [0.5, 3.0, 5.5], atol=1e-12)  # slope 5/2, intercept 1/2
    params, fitted = M.fit_logistic([1, 2, 3, 4], [4, 4, 4, 4])
    assert fitted.tolist() == [4, 4, 4, 4] and params[0] == params[1] == 4
    assert M.calculate_rmse_logistic([1, 2, 3, 4], [4, 4, 4, 4]) == 0.0
    with pytest.warns(M.DegenerateInputWarning, match=r'PLCC \(logistic\): target is constant'):
        assert math.isnan(M.calculate_plcc_logistic([1, 2, 3, 4], [4, 4, 4, 4]))


def test_constant_inputs_give_nan_with_warning():
    for fn in (M.calculate_srcc, M.calculate_krcc, M.calculate_plcc):
        with pytest.warns(M.DegenerateInputWarning, match='pred is constant'):
            assert math.isnan(fn([0.5, 0.5, 0.5], [1, 2, 3]))
        with pytest.warns(M.DegenerateInputWarning, match='target is constant'):
            assert math.isnan(fn([1, 2, 3], [4, 4, 4]))
    # Errors stay defined; after the fit a constant score maps to the mean rating.
    assert M.calculate_rmse([0.5, 0.5, 0.5], [1, 2, 3]) == pytest.approx(math.sqrt((0.25 + 2.25 + 6.25) / 3))
    with pytest.warns(M.DegenerateInputWarning):
        assert M.calculate_rmse_logistic([0.5, 0.5, 0.5], [1, 2, 3]) == pytest.approx(math.sqrt(2 / 3))
    with pytest.warns(M.DegenerateInputWarning):
        assert math.isnan(M.calculate_plcc_logistic([0.5, 0.5, 0.5], [1, 2, 3]))


@pytest.mark.parametrize('pred, target, message', [
    ([1, 2, 3], [1, 2, 3, 4], 'pred has 3 values but target has 4'),
    ([1, 2, float('nan'), 4], [1, 2, 3, 4], r'pred: 1 NaN/inf value\(s\), first at index 2'),
    ([1, 2, 3], [1, float('inf'), 3], r'target: 1 NaN/inf value\(s\), first at index 1'),
    ([1], [2], 'at least 2 samples'),
    ([], [], 'at least 2 samples'),
    (np.zeros((3, 2)), np.zeros((3, 2)), r'pred: expected a 1-D array of scores, got shape \(3, 2\)'),
    (['a', 'b'], [1, 2], 'pred: cannot convert to a float array'),
])
def test_bad_input_raises(pred, target, message):
    with pytest.raises(ValueError, match=message):
        M.calculate_srcc(pred, target)


def test_accepts_column_vectors_tensors_and_extra_options():
    pred = torch.tensor([[1.0], [2.0], [2.0], [4.0], [5.0]], requires_grad=True)
    assert M.calculate_plcc(pred, np.array(TARGET)[:, None], better='higher') == M.calculate_plcc(PRED, TARGET)


def test_registered_and_callable_through_basicsr():
    for name in ('calculate_srcc', 'calculate_krcc', 'calculate_plcc', 'calculate_plcc_logistic', 'calculate_rmse',
                 'calculate_mae', 'calculate_rmse_logistic', 'calculate_mae_logistic', 'calculate_2afc_accuracy'):
        assert METRIC_REGISTRY.get(name) is getattr(M, name)
    value = calculate_metric({'pred': PRED, 'target': TARGET}, {'type': 'calculate_srcc', 'better': 'higher'})
    assert value == pytest.approx(7.25 / 9.5)


def test_compute_metrics_names_and_mapping():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, 60)
    y = 100 * x**2 + rng.normal(0, 5, 60)
    result = M.compute_metrics(x, y, ['srcc', 'plcc_logistic', 'rmse_logistic', 'calculate_krcc', '2afc'])
    assert list(result) == ['srcc', 'plcc_logistic', 'rmse_logistic', 'calculate_krcc', '2afc']
    assert result['srcc'] == M.calculate_srcc(x, y)
    assert result['plcc_logistic'] == pytest.approx(M.calculate_plcc_logistic(x, y), abs=1e-12)
    assert result['rmse_logistic'] == pytest.approx(M.calculate_rmse_logistic(x, y), abs=1e-12)
    assert result['calculate_krcc'] == M.calculate_krcc(x, y)
    assert result['2afc'] == M.calculate_2afc_accuracy(x, y)
    val_metrics = {'SRCC': {'type': 'calculate_srcc', 'better': 'higher'}, 'PLCC': {'type': 'plcc'}}
    labelled = M.compute_metrics(x, y, val_metrics)
    assert labelled == {'SRCC': result['srcc'], 'PLCC': M.calculate_plcc(x, y)}
    with pytest.raises(ValueError, match="unknown metric 'spearman'"):
        M.compute_metrics(x, y, ['spearman'])
    with pytest.raises(ValueError, match='no "type" key'):
        M.compute_metrics(x, y, {'SRCC': {'better': 'higher'}})


def _correlated(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, x + rng.normal(size=n)


@pytest.mark.parametrize('metric', [M.calculate_srcc, M.calculate_plcc, M.calculate_2afc_accuracy])
def test_bootstrap_ci_contains_estimate_and_shrinks(metric):
    small, large = _correlated(40, 0), _correlated(1000, 0)
    low_s, high_s = M.bootstrap_ci(metric, *small, n_boot=300)
    low_l, high_l = M.bootstrap_ci(metric, *large, n_boot=300)
    assert low_s <= metric(*small) <= high_s
    assert low_l <= metric(*large) <= high_l
    # Width shrinks roughly like 1/sqrt(n): 25x the samples, about a fifth of the width.
    assert (high_l - low_l) < 0.4 * (high_s - low_s)


def test_bootstrap_ci_reproducible_and_alpha():
    x, y = _correlated(100, 1)
    assert M.bootstrap_ci(M.calculate_srcc, x, y, n_boot=200, seed=5) == M.bootstrap_ci(
        M.calculate_srcc, x, y, n_boot=200, seed=5)
    assert M.bootstrap_ci(M.calculate_srcc, x, y, n_boot=200, seed=5) != M.bootstrap_ci(
        M.calculate_srcc, x, y, n_boot=200, seed=6)
    low90, high90 = M.bootstrap_ci(M.calculate_srcc, x, y, n_boot=400, alpha=0.10)
    low99, high99 = M.bootstrap_ci(M.calculate_srcc, x, y, n_boot=400, alpha=0.01)
    assert low99 < low90 < high90 < high99
    with pytest.raises(ValueError, match='alpha must be in'):
        M.bootstrap_ci(M.calculate_srcc, x, y, alpha=1.5)


def test_bootstrap_counts_undefined_resamples():
    # With 3 images, 3 of the 27 resamples draw one image three times (pred constant).
    with pytest.warns(M.DegenerateInputWarning, match=r'NaN on \d+ of 500 resamples'):
        low, high = M.bootstrap_ci(M.calculate_plcc, [0.0, 1.0, 2.0], [0.0, 2.0, 1.0], n_boot=500)
    assert -1.0 <= low <= high <= 1.0
