"""Find the weights in an ONNX file's bytes without parsing them into protobuf messages.

An .onnx file is a serialized ModelProto whose weights are almost all of its bytes: the
`raw_data` of each graph initializer (ModelProto.graph = field 7, GraphProto.initializer =
field 5, TensorProto.raw_data = field 9). `onnx.load` reads the whole file into a bytes object
and the protobuf parser copies every raw_data out of it again; for ResNet-18 (47 MB) those two
copies were 31 + 35 ms of a load (most of it page faults of fresh memory). `split_raw_data`
walks the protobuf wire format of the three levels that hold the weights, and returns the
message without those fields (a few KB to parse) and where each initializer's bytes are in the
file, so that the importer copies each weight once, straight from the mapped file.

Only well-formed wire data is walked: any other (truncated fields, group wire types, a field 0)
raises WireError, and the caller parses the file with protobuf as before, which reports what
is wrong with it.
"""
from __future__ import annotations

from fastcnn._kernels.wire import OVER_BUDGET, scan_fields

GRAPH_FIELD = 7         # ModelProto.graph
INITIALIZER_FIELD = 5   # GraphProto.initializer
RAW_DATA_FIELD = 9      # TensorProto.raw_data
LEN = 2                 # wire type of length-delimited fields
# Fields walked in one file at most: a real model has a few per node and initializer at these
# levels (ResNet-18: about 700); a hostile file of millions of tiny fields would make this
# Python loop slow (a second per million), and is parsed by protobuf's C parser instead.
MAX_FIELDS = 200_000


class WireError(ValueError):
    """The bytes are not the protobuf wire format this module walks."""


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(buf, start: int, end: int, budget: list) -> list:
    """Each field of the message in buf[start:end] as (field number, wire type, start of the
    field's key, start of its value, end of its value); a length-delimited value's start is
    after its length (_kernels/wire.scan_fields: a Python loop over MobileNetV2's 2,240
    fields was 2 ms). budget: [fields the walk may still visit], shared by the whole walk."""
    fields, error = scan_fields(buf, start, end, budget[0])
    budget[0] -= len(fields)
    if error is not None:
        raise WireError(f"more than {MAX_FIELDS} fields" if error == OVER_BUDGET else error)
    return fields


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    return _encode_varint(number << 3 | LEN) + _encode_varint(len(payload)) + payload


def _tensor_without_raw_data(buf, start: int, end: int, spans: list, budget: list) -> bytes:
    """The TensorProto in buf[start:end] without its raw_data; appends raw_data's
    (offset, length) in buf to spans, or None when it has none (the last occurrence counts,
    as when protobuf parses a repeated singular field)."""
    kept, span = [], None
    for field, wire, key_at, value_at, value_end in _fields(buf, start, end, budget):
        if field == RAW_DATA_FIELD and wire == LEN:
            span = (value_at, value_end - value_at)
        else:
            kept.append(buf[key_at:value_end])
    spans.append(span)
    return b"".join(kept)


def _graph_without_raw_data(buf, start: int, end: int, spans: list, budget: list) -> bytes:
    kept = []
    for field, wire, key_at, value_at, value_end in _fields(buf, start, end, budget):
        if field == INITIALIZER_FIELD and wire == LEN:
            kept.append(_field(INITIALIZER_FIELD,
                               _tensor_without_raw_data(buf, value_at, value_end, spans, budget)))
        else:
            kept.append(buf[key_at:value_end])
    return b"".join(kept)


def split_raw_data(buf) -> tuple:
    """(stripped, spans) for a serialized ModelProto `buf` (bytes, or a mapped file):
    `stripped` is the message with the raw_data of every graph initializer left out, and
    spans[i] the (offset, length) in buf of initializer i's raw_data (in the order the parsed
    message lists graph.initializer), or None where it has none. Raises WireError where buf
    is not well-formed wire data at these three levels, or has more than MAX_FIELDS there."""
    spans: list = []
    kept = []
    budget = [MAX_FIELDS]
    for field, wire, key_at, value_at, value_end in _fields(buf, 0, len(buf), budget):
        if field == GRAPH_FIELD and wire == LEN:
            kept.append(_field(GRAPH_FIELD, _graph_without_raw_data(buf, value_at, value_end,
                                                                    spans, budget)))
        else:
            kept.append(buf[key_at:value_end])
    return b"".join(kept), spans
