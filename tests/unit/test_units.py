"""dlaasd.units: sizes and durations as people write them."""

from __future__ import annotations

import pytest

from dlaasd.units import format_duration, format_size, parse_duration, parse_size

GB, GiB, MB, MiB = 1000**3, 1024**3, 1000**2, 1024**2


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1Gb", GB),  # FfDL writes "1Gb" and means gigabytes
        ("1GB", GB),
        ("1gb", GB),
        ("1G", GB),
        ("1000MiB", 1000 * MiB),
        ("512MB", 512 * MB),
        ("512mb", 512 * MB),
        ("2GiB", 2 * GiB),
        ("2Gi", 2 * GiB),
        ("2gi", 2 * GiB),
        ("1.5GB", 1_500_000_000),
        ("0.5GiB", 512 * MiB),
        ("256Mi", 256 * MiB),
        ("64KiB", 64 * 1024),
        ("10kb", 10_000),
        ("1TB", 1000**4),
        ("1TiB", 1024**4),
        (" 1 GB ", GB),
    ],
)
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "value",
    [
        "12",
        12,
        12.5,
        "12B",
        "12b",
        "abc",
        "",
        "GB",
        "-1GB",
        "1XB",
        "1 G B",
        "1e3GB",
        True,
        None,
        [1],
    ],
)
def test_parse_size_refuses(value):
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize("value", [12, "12", "12B"])
def test_parse_size_without_unit_says_add_a_unit(value):
    with pytest.raises(ValueError, match="add a unit"):
        parse_size(value)


@pytest.mark.parametrize(
    "value, expected",
    [
        (90, 90.0),
        (1.5, 1.5),
        ("90", 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1h30m15s", 5415.0),
        ("1.5h", 5400.0),
        (" 2h ", 7200.0),
        ("1h 30m", 5400.0),
        ("2H", 7200.0),
        ("0.5s", 0.5),
    ],
)
def test_parse_duration_accepts(value, expected):
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    ["5x", "", "h", "m30", "1m2h", "1d", "-3", "soon", True, False, None, [1], {"s": 1}],
)
def test_parse_duration_refuses(value):
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", [0, -3, "0", "0s", 0.0, "0h0m"])
def test_parse_duration_refuses_zero_and_negative(value):
    with pytest.raises(ValueError, match="more than zero"):
        parse_duration(value)


@pytest.mark.parametrize(
    "n, expected",
    [
        (None, "-"),
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0KiB"),
        (1536, "1.5KiB"),
        (MiB, "1.0MiB"),
        (GB, "1GB"),
        (int(1.5 * GiB), "1.5GiB"),
        (1024**4, "1.0TiB"),
        (1024**5, "1024.0TiB"),
    ],
)
def test_format_size(n, expected):
    assert format_size(n) == expected


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (None, "-"),
        (0, "0s"),
        (0.4, "0s"),
        (59, "59s"),
        (59.6, "1m00s"),
        (90, "1m30s"),
        (3600, "1h00m"),
        (5400, "1h30m"),
        (5415, "1h30m"),
        (86400, "24h00m"),
    ],
)
def test_format_duration(seconds, expected):
    assert format_duration(seconds) == expected


@pytest.mark.parametrize("text", ["90s", "30m", "2h", "1h30m", "45s"])
def test_duration_round_trip(text):
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
