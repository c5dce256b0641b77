"""dlaasd.prometheus: histograms from values, the TCP address."""

from __future__ import annotations

import pytest

from dlaasd.prometheus import histogram, parse_address


def test_histogram_buckets_are_cumulative():
    h = histogram("x_seconds", "doc", [0.5, 3, 3, 100], buckets=(1, 5, 60))
    got = {(s.name, s.labels.get("le")): s.value for s in h.samples}
    assert got[("x_seconds_bucket", "1.0")] == 1
    assert got[("x_seconds_bucket", "5.0")] == 3
    assert got[("x_seconds_bucket", "60.0")] == 3
    assert got[("x_seconds_bucket", "+Inf")] == 4
    assert got[("x_seconds_count", None)] == 4 and got[("x_seconds_sum", None)] == 106.5


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("9464", ("127.0.0.1", 9464)),
        (":9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9464", ("::1", 9464)),
    ],
)
def test_addresses(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["", "host:", "host:99999", "a:b"])
def test_bad_addresses(text):
    with pytest.raises(ValueError):
        parse_address(text)
