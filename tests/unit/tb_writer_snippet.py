"""A TensorBoard scalar writer without libraries, for training code in test containers.

`tfevent_record` is self-contained (standard library `struct` only, Python 3.8+): paste it
into model code and append its bytes to a file whose name contains "tfevents", e.g.
`$LOG_DIR/tb/events.out.tfevents.<unix time>.<host>`; flush after each record.
tests/unit/test_tbevents.py checks it against tensorboard's own protobuf classes.
"""


def tfevent_record(step, tag, value, wall_time):
    """One TFRecord-framed TensorBoard Event{wall_time, step, summary{value{tag,
    simple_value}}}: the bytes to append to an event file."""
    import struct

    def varint(n):
        n &= 0xFFFFFFFFFFFFFFFF  # negative int64: two's complement, ten bytes
        out = bytearray()
        while n > 0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    def field(number, payload):  # length-delimited (wire type 2)
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    def masked_crc(data):  # CRC32C (Castagnoli), masked as TFRecord does
        crc = 0xFFFFFFFF
        for byte in data:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        crc ^= 0xFFFFFFFF
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    # Summary.Value: tag = 1 (string), simple_value = 2 (float, wire type 5)
    try:
        simple_value = struct.pack("<f", value)
    except OverflowError:  # beyond float32, as protobuf stores it
        simple_value = struct.pack("<f", float("inf") if value > 0 else float("-inf"))
    summary_value = field(1, str(tag).encode("utf-8")) + b"\x15" + simple_value
    event = b""
    if wall_time:  # Event: wall_time = 1 (double, wire type 1); proto3 omits zeros
        event += b"\x09" + struct.pack("<d", wall_time)
    if step:  # step = 2 (int64, varint)
        event += b"\x10" + varint(int(step))
    event += field(5, field(1, summary_value))  # summary = 5, Summary.value = 1
    header = struct.pack("<Q", len(event))
    return (
        header
        + struct.pack("<I", masked_crc(header))
        + event
        + struct.pack("<I", masked_crc(event))
    )
