"""naive and sw_avg against hand-computed forecasts, and the bucket helpers."""

from __future__ import annotations

import numpy as np
import pytest
from predictor_data import constant, loads_from_shares

from moetrace.errors import ParameterError
from moetrace.predictors import PredictorOptions, make_predictor
from moetrace.predictors.buckets import bucket_means, expand_buckets, normalize_shares
from moetrace.predictors.sw_avg import sliding_window_average
from moetrace.trace.shares import Loads


def _loads_with_shares(values, steps=None) -> Loads:
    """A one-layer, one-expert Loads whose shares are ``values`` (set directly)."""
    steps = np.arange(len(values)) if steps is None else np.asarray(steps)
    loads = Loads(steps, np.ones((1, len(values), 1), dtype=np.int64), (0,))
    loads.__dict__["shares"] = np.asarray(values, dtype=float).reshape(1, -1, 1)
    return loads


def test_bucket_means_align_to_the_end_and_drop_the_leading_remainder():
    x = _loads_with_shares(np.arange(7, dtype=float))
    assert bucket_means(x, 3)[0, :, 0].tolist() == [2.0, 5.0]  # (1+2+3)/3, (4+5+6)/3


def test_bucket_means_are_in_training_steps_on_sampled_and_gapped_traces():
    # every 10th step: buckets of 20 steps hold two samples each
    sampled = _loads_with_shares(np.arange(6, dtype=float), steps=np.arange(0, 60, 10))
    assert bucket_means(sampled, 20)[0, :, 0].tolist() == [0.5, 2.5, 4.5]
    # a bucket of 1 step cannot be narrower than the sampling interval
    from moetrace.predictors.buckets import effective_bucket
    assert effective_bucket(1, 10) == 10 and effective_bucket(25, 10) == 30
    # a gap: steps 0..3 and 8..11, buckets of 2 steps ending at 11; the two empty buckets
    # (steps 4-5, 6-7) repeat the bucket before them
    gapped = _loads_with_shares([0, 1, 2, 3, 8, 9, 10, 11], steps=[0, 1, 2, 3, 8, 9, 10, 11])
    assert bucket_means(gapped, 2)[0, :, 0].tolist() == [0.5, 2.5, 2.5, 2.5, 8.5, 10.5]


def test_expand_buckets_repeats_each_bucket_and_trims():
    f = np.array([1.0, 2.0]).reshape(1, 2, 1)
    assert expand_buckets(f, 3, 5)[0, :, 0].tolist() == [1, 1, 1, 2, 2]


def test_normalize_shares_clips_negatives_and_makes_zero_rows_uniform():
    out = normalize_shares(np.array([[[-1.0, 1.0, 3.0], [0.0, 0.0, 0.0]]]))
    assert out[0, 0].tolist() == [0.0, 0.25, 0.75]
    assert out[0, 1].tolist() == pytest.approx([1 / 3] * 3)


def test_sliding_window_average_recursion_by_hand():
    x = np.array([1.0, 2.0, 3.0, 6.0]).reshape(1, 4, 1)
    out = sliding_window_average(x, 3, window=2)[0, :, 0]
    # mean(3,6)=4.5; mean(6,4.5)=5.25; mean(4.5,5.25)=4.875
    assert out.tolist() == pytest.approx([4.5, 5.25, 4.875])


def test_sliding_window_average_converges_to_a_constant():
    rng = np.random.default_rng(1)
    out = sliding_window_average(rng.random((1, 50, 3)), 400, window=10)
    assert np.abs(out[0, -1] - out[0, -2]).max() < 1e-9


def test_naive_repeats_the_last_step():
    shares = np.array([[[0.5, 0.5], [0.25, 0.75]]])
    loads = loads_from_shares(shares)
    out = make_predictor("naive").fit(loads).forecast(3)
    assert out.shape == (1, 3, 2)
    np.testing.assert_allclose(out[0], [[0.25, 0.75]] * 3)


def test_naive_with_buckets_repeats_the_last_bucket_mean():
    shares = np.array([[[0.5, 0.5], [0.2, 0.8], [0.4, 0.6]]])
    out = make_predictor("naive", PredictorOptions(bucket=2)).fit(
        loads_from_shares(shares)).forecast(3)
    np.testing.assert_allclose(out[0], [[0.3, 0.7]] * 3)


def test_sw_avg_first_step_is_the_window_mean():
    shares = np.array([[[0.1, 0.9], [0.3, 0.7], [0.5, 0.5], [0.7, 0.3]]])
    out = make_predictor("sw_avg", PredictorOptions(window=2)).fit(
        loads_from_shares(shares)).forecast(2)
    np.testing.assert_allclose(out[0], [[0.6, 0.4], [0.65, 0.35]])


def test_sw_avg_window_longer_than_history_uses_all_of_it():
    shares = np.array([[[0.2, 0.8], [0.4, 0.6]]])
    out = make_predictor("sw_avg").fit(loads_from_shares(shares)).forecast(1)
    np.testing.assert_allclose(out[0, 0], [0.3, 0.7])


def test_forecast_1000_is_a_prefix_of_forecast_2000():
    p = make_predictor("sw_avg", PredictorOptions(window=50, bucket=10)).fit(constant())
    long, short = p.forecast(2000), p.forecast(1000)
    np.testing.assert_array_equal(long[:, :1000], short)


@pytest.mark.parametrize("options, message", [
    (PredictorOptions(window=5, bucket=10), "window"),
    (PredictorOptions(bucket=0), "bucket"),
])
def test_bad_options_are_parameter_errors(options, message):
    with pytest.raises(ParameterError, match=message):
        make_predictor("sw_avg", options)
