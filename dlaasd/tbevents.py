"""Scalars from TensorBoard event files while a training writes them.

An event file is a sequence of TFRecords::

    uint64 length (little-endian) | uint32 masked CRC32C of length
    data[length] (a serialized tensorboard Event) | uint32 masked CRC32C of data

`EventTail(folder).poll()` reads every `*tfevents*` file under the folder (recursively,
files appearing later included) from where the previous poll stopped and returns only the
new scalar points. A record still being written stays for the next poll. A record whose
CRC does not match is corruption: a warning, and the rest of that file is skipped.

Scalars are TF1 `simple_value`s and TF2 (and `tensorboard.summary`) tensor scalars.
The protobuf classes (the `tensorboard` package) are imported on the first poll only, so
that the daemon does not load protobuf unless a run uses TensorBoard metrics.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

HEADER = 12  # uint64 length + uint32 CRC of it
FOOTER = 4  # uint32 CRC of the data
# The data CRC is checked in pure Python: cheap for scalar events (tens of bytes), slow for
# images or graphs (megabytes); those are left to the protobuf parser to reject.
DATA_CRC_LIMIT = 64 * 1024


class Point(NamedTuple):
    step: int
    name: str
    value: float
    wall_time: float


# CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses it.
def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class _File:
    __slots__ = ("offset", "corrupt", "warned")

    def __init__(self) -> None:
        self.offset = 0
        self.corrupt = False
        self.warned = False  # about an error reading it


class EventTail:
    """New scalar points of the event files under `folder` at each `poll()`."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.files: dict[Path, _File] = {}
        # (event_pb2, types_pb2, DecodeError), imported on the first record
        self._pb: tuple[Any, Any, type[Exception]] | None = None

    def poll(self) -> list[Point]:
        """Points of the records completed since the previous poll (blocking file reads)."""
        points: list[Point] = []
        for path in self._event_files():
            state = self.files.setdefault(path, _File())
            if state.corrupt:
                continue
            try:
                size = path.stat().st_size
                if size < state.offset:  # replaced by a new file of the same name
                    log.warning("event=tbevents_truncated file=%s", path)
                    state.offset = 0
                if size - state.offset < HEADER:
                    continue
                self._read(path, state, points)
            except FileNotFoundError:  # removed since listed
                del self.files[path]
            except OSError as exc:
                if not state.warned:
                    log.warning("event=tbevents_unreadable file=%s error=%s", path, exc)
                state.warned = True
        return points

    def _event_files(self) -> list[Path]:
        """Files named *tfevents* under the folder, in the order of their relative paths."""
        found = []
        for root, dirs, names in os.walk(self.folder):
            dirs.sort()
            found += [
                Path(root, n)
                for n in names
                if "tfevents" in n and stat.S_ISREG(os.lstat(os.path.join(root, n)).st_mode)
            ]  # no links
        return sorted(found, key=lambda p: p.relative_to(self.folder).parts)

    def _read(self, path: Path, state: _File, points: list[Point]) -> None:
        """Append the points of the file's complete records from where it was left."""
        with open(path, "rb") as f:
            f.seek(state.offset)
            while True:
                header = f.read(HEADER)
                if len(header) < HEADER:
                    break  # the writer is still writing: next poll
                length_bytes, length_crc = header[:8], header[8:]
                if struct.unpack("<I", length_crc) != (masked_crc32c(length_bytes),):
                    self._corrupt(path, state, "length CRC mismatch")
                    break
                (length,) = struct.unpack("<Q", length_bytes)
                body = f.read(length + FOOTER)
                if len(body) < length + FOOTER:
                    break
                data = body[:length]
                (data_crc,) = struct.unpack("<I", body[length:])
                if length <= DATA_CRC_LIMIT and data_crc != masked_crc32c(data):
                    self._corrupt(path, state, "data CRC mismatch")
                    break
                state.offset += HEADER + length + FOOTER
                points += self._scalars(path, data)

    def _corrupt(self, path: Path, state: _File, why: str) -> None:
        log.warning(
            "event=tbevents_corrupt file=%s offset=%d error=%r: skipping the rest of the file",
            path,
            state.offset,
            why,
        )
        state.corrupt = True

    def _scalars(self, path: Path, data: bytes) -> list[Point]:
        if self._pb is None:
            from google.protobuf.message import DecodeError
            from tensorboard.compat.proto import event_pb2, types_pb2

            self._pb = (event_pb2, types_pb2, DecodeError)
        event_pb2, types_pb2, decode_error = self._pb
        try:
            event = event_pb2.Event.FromString(data)
        except decode_error as exc:
            log.warning("event=tbevents_bad_record file=%s error=%s", path, exc)
            return []
        if event.WhichOneof("what") != "summary":
            return []  # file_version, graph_def, session_log, ...
        points = []
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            if kind == "simple_value":
                number = value.simple_value
            elif kind == "tensor":
                number = _tensor_scalar(value, types_pb2)
                if number is None:
                    continue
            else:
                continue  # image, histo, audio, ...
            points.append(Point(int(event.step), value.tag, float(number), event.wall_time))
        return points


# dtype -> (TensorProto field with the values, struct format of tensor_content)
def _dtypes(types_pb2) -> dict[int, tuple[str, str]]:
    t = types_pb2
    return {
        t.DT_FLOAT: ("float_val", "<f"),
        t.DT_DOUBLE: ("double_val", "<d"),
        t.DT_HALF: ("half_val", "<e"),
        t.DT_BFLOAT16: ("half_val", "<H"),
        t.DT_INT8: ("int_val", "<b"),
        t.DT_INT16: ("int_val", "<h"),
        t.DT_INT32: ("int_val", "<i"),
        t.DT_UINT8: ("int_val", "<B"),
        t.DT_UINT16: ("int_val", "<H"),
        t.DT_INT64: ("int64_val", "<q"),
        t.DT_UINT32: ("uint32_val", "<I"),
        t.DT_UINT64: ("uint64_val", "<Q"),
        t.DT_BOOL: ("bool_val", "<?"),
    }


_DTYPES: dict[int, tuple[str, str]] | None = None


def _tensor_scalar(value, types_pb2) -> float | None:
    """The number in a one-element numeric tensor, when it is a scalar summary: plugin
    "scalars", or a 0-d tensor of any plugin. None otherwise (text, histograms, images)."""
    global _DTYPES
    if _DTYPES is None:
        _DTYPES = _dtypes(types_pb2)
    tensor = value.tensor
    dims = [d.size for d in tensor.tensor_shape.dim]
    scalars_plugin = value.metadata.plugin_data.plugin_name == "scalars"
    if not (scalars_plugin or not dims) or any(d != 1 for d in dims):
        return None
    known = _DTYPES.get(tensor.dtype)
    if known is None:
        return None
    field, fmt = known
    if tensor.tensor_content:
        if len(tensor.tensor_content) != struct.calcsize(fmt):
            return None
        (number,) = struct.unpack(fmt, tensor.tensor_content)
    else:
        values = getattr(tensor, field)
        if len(values) != 1:
            return None
        number = values[0]
        if tensor.dtype == types_pb2.DT_HALF:  # half_val holds the 16 bits
            (number,) = struct.unpack("<e", struct.pack("<H", number & 0xFFFF))
    if tensor.dtype == types_pb2.DT_BFLOAT16:  # the high half of a float32
        (number,) = struct.unpack("<f", struct.pack("<I", (int(number) & 0xFFFF) << 16))
    return float(number)
