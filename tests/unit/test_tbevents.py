"""dlaasd.tbevents: scalars from TensorBoard event files that are still being written.

Event files come from tensorboard's own writers (no TensorFlow needed); torn and corrupt
files are made by hand from the bytes those writers produce.
"""

from __future__ import annotations

import ast
import inspect
import io
import logging
import math
import struct
import subprocess
import sys

import numpy as np
import pytest
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2
from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c as tb_masked
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tensorboard.summary.writer.record_writer import RecordWriter

from dlaasd.tbevents import DATA_CRC_LIMIT, EventTail, Point, crc32c, masked_crc32c
from tests.unit.tb_writer_snippet import tfevent_record

T0 = 1_700_000_000.0


def scalar_event(step: int, tag: str, value: float, wall_time: float = T0) -> event_pb2.Event:
    event = event_pb2.Event(wall_time=wall_time, step=step)
    event.summary.value.add(tag=tag, simple_value=value)
    return event


def framed(*events: event_pb2.Event) -> bytes:
    """Events as TFRecords, framed by tensorboard's RecordWriter."""
    buf = io.BytesIO()
    writer = RecordWriter(buf)
    for event in events:
        writer.write(event.SerializeToString())
    return buf.getvalue()


def f32(x: float) -> float:
    """simple_value is a float32 (beyond its range: infinity)."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def expected(step: int, tag: str, value: float, wall_time: float = T0) -> Point:
    return Point(step, tag, f32(value), wall_time)


def add_scalars(writer: EventFileWriter, steps: range, tags=("loss", "accuracy")) -> list:
    points = []
    for step in steps:
        for i, tag in enumerate(tags):
            value = 1.0 / (step + 1) + i
            writer.add_event(scalar_event(step, tag, value, T0 + step))
            points.append(expected(step, tag, value, T0 + step))
    writer.flush()
    return points


def test_crc32c():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    for data in (b"", b"a", bytes(range(256)), b"x" * 1000):
        assert masked_crc32c(data) == tb_masked(data)


def test_points_come_back_once_while_the_file_grows(tmp_path):
    tail = EventTail(tmp_path)
    assert tail.poll() == []
    writer = EventFileWriter(str(tmp_path / "run1"))
    try:
        assert tail.poll() == []  # only the file_version event so far
        first = add_scalars(writer, range(0, 3))
        assert tail.poll() == first
        assert tail.poll() == []
        second = add_scalars(writer, range(3, 5))
        third = add_scalars(writer, range(5, 9))
        assert tail.poll() == second + third
        assert tail.poll() == []
    finally:
        writer.close()
    assert tail.poll() == []
    # A fresh tail (daemon restart) reads the whole file once.
    assert EventTail(tmp_path).poll() == first + second + third
    point = first[0]
    assert isinstance(point.step, int) and isinstance(point.value, float)
    assert point.wall_time == T0


def test_a_missing_folder_is_empty_until_it_appears(tmp_path):
    tail = EventTail(tmp_path / "tb")
    assert tail.poll() == []
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "events.out.tfevents.1.host").write_bytes(framed(scalar_event(1, "a", 2)))
    assert tail.poll() == [expected(1, "a", 2)]


def test_a_record_split_across_two_writes_is_returned_once_complete(tmp_path):
    events = [scalar_event(step, "loss", step / 10, T0 + step) for step in range(3)]
    data = framed(*events)
    want = [expected(e.step, "loss", e.step / 10, e.wall_time) for e in events]
    path = tmp_path / "events.out.tfevents.1700000000.host.1.0"
    ends = [len(framed(*events[: i + 1])) for i in range(len(events))]
    for cut in range(1, len(data)):  # every split: in a header, in data, in a CRC
        path.write_bytes(data[:cut])
        tail = EventTail(tmp_path)
        got = tail.poll()
        assert got == want[: sum(cut >= end for end in ends)]
        assert tail.poll() == []
        with open(path, "ab") as f:
            f.write(data[cut:])
        assert got + tail.poll() == want, cut
        assert tail.poll() == []


def test_files_appearing_later_are_picked_up_in_path_order(tmp_path):
    tail = EventTail(tmp_path)
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "events.out.tfevents.2.host").write_bytes(framed(scalar_event(1, "a", 1)))
    (tmp_path / "notes.txt").write_text("not an event file")
    assert tail.poll() == [expected(1, "a", 1)]

    (tmp_path / "run2" / "eval").mkdir(parents=True)
    (tmp_path / "run2" / "eval" / "events.out.tfevents.3.host").write_bytes(
        framed(scalar_event(1, "b", 2))
    )
    (tmp_path / "run1" / "events.out.tfevents.1.host").write_bytes(framed(scalar_event(1, "c", 3)))
    with open(tmp_path / "run1" / "events.out.tfevents.2.host", "ab") as f:
        f.write(framed(scalar_event(2, "a", 4)))
    # run1/...1 (new), run1/...2 (grown), run2/eval/...3 (new)
    assert tail.poll() == [expected(1, "c", 3), expected(2, "a", 4), expected(1, "b", 2)]
    assert tail.poll() == []


@pytest.mark.parametrize("where", ["length CRC", "data", "data CRC"])
def test_a_corrupt_record_skips_the_rest_of_its_file_with_a_warning(tmp_path, caplog, where):
    records = [framed(scalar_event(step, "loss", step)) for step in range(3)]
    second = bytearray(records[1])
    index = {"length CRC": 9, "data": len(second) - 6, "data CRC": len(second) - 1}[where]
    second[index] ^= 0xFF
    bad = tmp_path / "a" / "events.out.tfevents.1.host"
    bad.parent.mkdir()
    bad.write_bytes(records[0] + bytes(second) + records[2])
    good = tmp_path / "b" / "events.out.tfevents.1.host"
    good.parent.mkdir()
    good.write_bytes(framed(scalar_event(7, "acc", 0.5)))

    tail = EventTail(tmp_path)
    with caplog.at_level(logging.WARNING, logger="dlaasd.tbevents"):
        assert tail.poll() == [expected(0, "loss", 0), expected(7, "acc", 0.5)]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tbevents_corrupt" in warnings[0].getMessage()
    assert str(bad) in warnings[0].getMessage()

    caplog.clear()
    with open(bad, "ab") as f:
        f.write(records[2])
    with open(good, "ab") as f:
        f.write(framed(scalar_event(8, "acc", 0.75)))
    assert tail.poll() == [expected(8, "acc", 0.75)]
    assert caplog.records == []  # warned once


def test_an_unparsable_record_with_good_crcs_is_skipped(tmp_path, caplog):
    garbage = b"\xff\xff\xff"
    buf = io.BytesIO()
    RecordWriter(buf).write(garbage)
    data = framed(scalar_event(1, "a", 1)) + buf.getvalue() + framed(scalar_event(2, "a", 2))
    (tmp_path / "events.out.tfevents.1.host").write_bytes(data)
    with caplog.at_level(logging.WARNING, logger="dlaasd.tbevents"):
        assert EventTail(tmp_path).poll() == [expected(1, "a", 1), expected(2, "a", 2)]
    assert "tbevents_bad_record" in caplog.text


def tensor_value(tag: str, dtype: int, dims=(), plugin: str | None = None, **fields):
    tensor = tensor_pb2.TensorProto(
        dtype=dtype,
        tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=d) for d in dims]),
        **fields,
    )
    value = summary_pb2.Summary.Value(tag=tag, tensor=tensor)
    if plugin:
        value.metadata.plugin_data.plugin_name = plugin
    return value


def test_tf2_tensor_scalars(tmp_path):
    from tensorboard.plugins.histogram.summary_v2 import histogram_pb
    from tensorboard.plugins.scalar.summary_v2 import scalar_pb
    from tensorboard.plugins.text.summary_v2 import text_pb
    from tensorboard.summary import Writer

    # tensorboard's TF-free writer: 0-d DT_FLOAT tensors, plugin "scalars"
    writer = Writer(str(tmp_path / "writer"))
    writer.add_scalar("loss", 0.25, step=3, wall_time=T0)
    writer.add_scalar("loss", 0.125, step=4, wall_time=T0 + 1)
    writer.close()

    half = int(np.array(1.5, dtype=np.float16).view(np.uint16))
    bf16 = struct.unpack("<I", struct.pack("<f", -2.5))[0] >> 16
    values = [
        tensor_value("double", types_pb2.DT_DOUBLE, plugin="scalars", double_val=[0.1]),
        tensor_value("int32", types_pb2.DT_INT32, int_val=[-7]),
        tensor_value("int64", types_pb2.DT_INT64, int64_val=[2**40]),
        tensor_value("half", types_pb2.DT_HALF, half_val=[half]),
        tensor_value("bfloat16", types_pb2.DT_BFLOAT16, half_val=[bf16]),
        tensor_value("content_double", types_pb2.DT_DOUBLE, tensor_content=struct.pack("<d", 2.5)),
        tensor_value("content_float", types_pb2.DT_FLOAT, tensor_content=struct.pack("<f", 0.5)),
        tensor_value("content_int64", types_pb2.DT_INT64, tensor_content=struct.pack("<q", -3)),
        tensor_value("content_half", types_pb2.DT_HALF, tensor_content=struct.pack("<e", 0.75)),
        tensor_value("shape1", types_pb2.DT_FLOAT, dims=(1,), plugin="scalars", float_val=[9.0]),
        # not scalars
        tensor_value("vector", types_pb2.DT_FLOAT, dims=(3,), float_val=[1, 2, 3]),
        tensor_value("vector_sc", types_pb2.DT_FLOAT, dims=(3,), plugin="scalars", float_val=[1]),
        tensor_value("one_elem_1d", types_pb2.DT_FLOAT, dims=(1,), float_val=[1.0]),
        tensor_value("string", types_pb2.DT_STRING, string_val=[b"x"]),
        tensor_value("empty", types_pb2.DT_FLOAT),
    ]
    event = event_pb2.Event(wall_time=T0, step=5)
    event.summary.value.extend(values)
    event.summary.MergeFrom(scalar_pb("accuracy", 0.875))
    event.summary.MergeFrom(text_pb("note", "hello"))
    event.summary.MergeFrom(histogram_pb("weights", np.arange(10.0)))
    image = event.summary.value.add(tag="image")
    image.image.height, image.image.width = 1, 1
    image.image.encoded_image_string = b"\x89PNG..."
    event.summary.value.add(tag="legacy", simple_value=0.5)
    (tmp_path / "hand").mkdir()
    (tmp_path / "hand" / "events.out.tfevents.1.host").write_bytes(framed(event))

    got = EventTail(tmp_path).poll()
    hand = {p.name: p.value for p in got if p.step == 5}
    assert [p for p in got if p.step != 5] == [
        Point(3, "loss", 0.25, T0),
        Point(4, "loss", 0.125, T0 + 1),
    ]
    assert hand == {
        "double": 0.1,
        "int32": -7.0,
        "int64": float(2**40),
        "half": 1.5,
        "bfloat16": -2.5,
        "content_double": 2.5,
        "content_float": 0.5,
        "content_int64": -3.0,
        "content_half": 0.75,
        "shape1": 9.0,
        "accuracy": 0.875,
        "legacy": 0.5,
    }
    assert all(type(v) is float for v in hand.values())


def test_a_big_merged_summary_still_gives_its_scalars(tmp_path):
    """TF1 merge_all() puts images and scalars in one event, beyond the data CRC limit."""
    event = scalar_event(3, "loss", 0.5)
    image = event.summary.value.add(tag="input")
    image.image.encoded_image_string = bytes(DATA_CRC_LIMIT + 1000)
    (tmp_path / "events.out.tfevents.1.host").write_bytes(framed(event))
    assert EventTail(tmp_path).poll() == [expected(3, "loss", 0.5)]


def test_non_finite_values_pass_through(tmp_path):
    data = framed(scalar_event(1, "loss", math.nan), scalar_event(2, "loss", math.inf))
    (tmp_path / "events.out.tfevents.1.host").write_bytes(data)
    got = EventTail(tmp_path).poll()
    assert math.isnan(got[0].value) and got[1].value == math.inf


# -- the dependency-free writer for training containers ---------------------------------

SNIPPET_CASES = [
    (0, "loss", 0.0, 0.0),
    (1, "loss", 0.5, T0),
    (7, "accuracy", 0.9375, T0 + 0.123456),
    (300, "val/loss", -1.25, 1.5),
    (2**40, "big step", 3.0e38, T0),
    (-5, "négatif ✓", -0.0, T0),
    (12, "huge", 1e300, T0),
]


@pytest.mark.parametrize("step, tag, value, wall_time", SNIPPET_CASES)
def test_snippet_records_parse_like_tensorboards_own(step, tag, value, wall_time):
    record = tfevent_record(step, tag, value, wall_time)
    (length,) = struct.unpack("<Q", record[:8])
    assert len(record) == 12 + length + 4
    assert struct.unpack("<I", record[8:12])[0] == tb_masked(record[:8])
    data = record[12 : 12 + length]
    assert struct.unpack("<I", record[-4:])[0] == tb_masked(data)

    parsed = event_pb2.Event.FromString(data)
    official = scalar_event(step, tag, value, wall_time)
    assert parsed == official
    if value == value and not (value == 0 and math.copysign(1, value) < 0):
        assert record == framed(official)  # byte for byte, -0.0 aside


def test_event_tail_reads_the_snippets_records(tmp_path):
    path = tmp_path / "tb" / "events.out.tfevents.1700000000.container"
    path.parent.mkdir()
    tail = EventTail(tmp_path / "tb")
    for step, tag, value, wall_time in SNIPPET_CASES:
        with open(path, "ab") as f:
            f.write(tfevent_record(step, tag, value, wall_time))
        assert tail.poll() == [expected(step, tag, value, wall_time)]


def test_point_shape():
    assert Point._fields == ("step", "name", "value", "wall_time")


def test_the_snippet_pastes_alone_into_python_3_8_code():
    source = inspect.getsource(tfevent_record)
    ast.parse(source, feature_version=(3, 8))
    namespace: dict = {}
    exec(source, namespace)  # no module globals: it needs nothing around it
    assert namespace["tfevent_record"](1, "a", 0.5, T0) == tfevent_record(1, "a", 0.5, T0)


def test_importing_the_module_does_not_load_protobuf():
    code = "import sys, dlaasd.tbevents; assert 'google.protobuf' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_removed_file_is_forgotten_and_a_replaced_one_read_again(tmp_path):
    path = tmp_path / "events.out.tfevents.1.host"
    path.write_bytes(framed(scalar_event(1, "a", 1), scalar_event(2, "a", 2)))
    tail = EventTail(tmp_path)
    assert len(tail.poll()) == 2
    path.unlink()
    assert tail.poll() == []
    path.write_bytes(framed(scalar_event(3, "a", 3)))  # shorter: a new file
    assert tail.poll() == [expected(3, "a", 3)]
