"""Sizes and durations as people write them in manifests and config files."""

from __future__ import annotations

import re

from dlaasctl.fmt import binary_size

# FfDL writes "1Gb" and means gigabytes; decimal units are powers of 1000, binary ones
# ("Gi", "GiB") powers of 1024. Case of the unit does not matter.
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "ki": 1024,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mi": 1024**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gi": 1024**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """'512MB', '1000MiB', '1Gb', '2GiB' -> bytes. A bare number is refused: too ambiguous."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("")
    if isinstance(value, int | float):
        raise ValueError(f"add a unit, e.g. {value}MiB or {value}GB")
    if value.strip().startswith("-"):
        raise ValueError("a size cannot be negative")
    m = _SIZE.match(value)
    if m and m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"unknown unit {m.group(2)!r}; use KB, MB, GB, TB or KiB, MiB, GiB, TiB")
    if not m:
        raise ValueError("")
    number, unit = float(m.group(1)), m.group(2).lower()
    if unit in ("", "b"):
        raise ValueError(f"add a unit, e.g. {m.group(1)}MiB or {m.group(1)}GB")
    return int(number * _SIZE_UNITS[unit])


def format_size(n: int | float | None) -> str:
    """Bytes for people; round decimal amounts ("1GB" as written) stay decimal."""
    if n is None:
        return "-"
    for unit, size in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2)):
        if n >= size and n % size == 0 and n % 1024**2 != 0:
            return f"{n // size}{unit}"
    return binary_size(n)


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(value: object) -> float:
    """90, '90s', '30m', '2h', '1h30m' -> seconds."""
    if isinstance(value, bool):
        raise ValueError("")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            m = _DURATION.match(text)
            if not text or not m or not any(m.groups()):
                raise ValueError("")
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = h * 3600 + mi * 60 + s
    else:
        raise ValueError("")
    if seconds <= 0:
        raise ValueError("must be more than zero")
    return seconds


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"
