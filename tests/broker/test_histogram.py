"""``Histogram``: observations land in Prometheus's buckets (an observation equal to a bound
counts in that bound's bucket), histograms of the same bounds add up, bounds are checked."""

from __future__ import annotations

import pytest
from sluice.broker.domain.stats import BATCH_BOUNDS_BYTES, LATENCY_BOUNDS_S, Histogram


def test_observations_land_in_the_bucket_of_the_first_bound_they_do_not_exceed():
    histogram = Histogram((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 2.0, 4.0, 5.0, 5.5, 100.0):
        histogram.observe(value)
    assert histogram.counts == [2, 2, 2, 2]  # <=1, (1,2], (2,5], +Inf
    assert histogram.count == 8 and histogram.sum == pytest.approx(119.5)


def test_histograms_of_the_same_bounds_add_up():
    a, b = Histogram((1.0, 2.0)), Histogram((1.0, 2.0))
    a.observe(0.5)
    b.observe(1.5)
    b.observe(3.0)
    a.add(b)
    assert a.counts == [1, 1, 1] and a.sum == 5.0 and b.counts == [0, 1, 1]
    with pytest.raises(ValueError, match="same bounds"):
        a.add(Histogram((1.0, 3.0)))


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0)])
def test_bounds_must_be_strictly_increasing(bounds):
    with pytest.raises(ValueError, match="strictly increasing"):
        Histogram(bounds)


def test_the_broker_s_bounds():
    assert LATENCY_BOUNDS_S[0] == 0.0001 and LATENCY_BOUNDS_S[-1] == 10.0
    assert BATCH_BOUNDS_BYTES[0] == 256 and BATCH_BOUNDS_BYTES[-1] == 16 << 20
