"""Tables, sizes and times for people (--json prints the raw data instead)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from datetime import UTC, datetime


def binary_size(n: float) -> str:
    """Bytes in powers of 1024: 1536 -> "1.5KiB". (The daemon's units.format_size uses it
    too: the client never imports the daemon, the daemon may import the client's parts.)"""
    if abs(n) < 1024:
        return f"{n:.0f}B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:.1f}{unit}"
    return f"{n / 1024:.1f}TiB"


def size(n: float | None) -> str:
    return "-" if n is None else binary_size(n)


def when(iso: str | None) -> str:
    """'2026-11-26T14:21:08.123Z' -> '14:21:08' today, else '2026-11-25 14:21'."""
    if not iso:
        return "-"
    t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone()
    if t.date() == datetime.now().astimezone().date():
        return t.strftime("%H:%M:%S")
    return t.strftime("%Y-%m-%d %H:%M")


def duration(start: str | None, end: str | None) -> str:
    if not start:
        return "-"
    t0 = datetime.fromisoformat(start.replace("Z", "+00:00"))
    t1 = datetime.fromisoformat(end.replace("Z", "+00:00")) if end else datetime.now(UTC)
    s = int((t1 - t0).total_seconds())
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell; the last column is cut to the terminal."""
    cells = [[str(c) if c is not None else "-" for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    term = shutil.get_terminal_size((120, 24)).columns
    lines = []
    for row in [list(headers)] + cells:
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        lines.append(line if len(line) <= term else line[: term - 1] + "…")
    return "\n".join(lines)
