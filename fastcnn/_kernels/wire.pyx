# cython: language_level=3
"""The fields of one protobuf message, found in its serialized bytes (importers/onnx_wire.py
walks an .onnx file's three levels that hold the weights with it).

Protobuf's wire format: each field is a varint key (field number << 3 | wire type) and a value:
a varint (wire type 0), 8 bytes (1), a varint length and that many bytes (2), or 4 bytes (5).
The bytes are a model file, untrusted: every position is checked against the message's end
before it is read, and lengths are compared before they are added (a length may be near 2^64).
"""

cdef enum:
    MAX_VARINT_BYTES = 10


cdef inline int read_varint(const unsigned char *buf, Py_ssize_t *pos, Py_ssize_t end,
                            unsigned long long *value) noexcept nogil:
    """The varint at buf[pos[0]] into value, pos[0] moved past it. Returns 0, or 1 where it runs
    past end, 2 where it is longer than 10 bytes, 3 where it does not fit 64 bits."""
    cdef unsigned long long v = 0, b
    cdef int shift = 0
    cdef Py_ssize_t p = pos[0]
    while True:
        if p >= end:
            return 1
        if shift >= 7 * MAX_VARINT_BYTES:
            return 2
        b = buf[p]
        p += 1
        if shift == 63 and (b & 0x7F) > 1:
            return 3
        if shift < 64:
            v |= (b & 0x7F) << shift
        if b < 0x80:
            value[0] = v
            pos[0] = p
            return 0
        shift += 7


# the error of a scan that would list more fields than its budget (callers name their limit)
OVER_BUDGET = "more than the field budget"

_VARINT_ERRORS = {1: "truncated varint", 2: "varint longer than 10 bytes",
                  3: "varint beyond 64 bits"}


def scan_fields(const unsigned char[::1] buf, Py_ssize_t start, Py_ssize_t end,
                Py_ssize_t budget):
    """(fields, error) for the message in buf[start:end]: fields is a list of (field number,
    wire type, start of the field's key, start of its value, end of its value), a length-
    delimited value's start being after its length; error is None, or what makes the bytes
    not the wire format (then fields holds those before it). At most `budget` fields are
    listed: one more is the error OVER_BUDGET."""
    fields = []
    if start < 0 or end > buf.shape[0] or start > end:
        return fields, "a message outside the buffer"
    if start == end:
        return fields, None
    cdef const unsigned char *b = &buf[0]
    cdef Py_ssize_t pos = start, key_at, value_at, count = 0
    cdef unsigned long long key, n
    cdef int err, wire
    while pos < end:
        if count >= budget:
            return fields, OVER_BUDGET
        key_at = pos
        err = read_varint(b, &pos, end, &key)
        if err:
            return fields, _VARINT_ERRORS[err]
        wire = <int>(key & 7)
        if key >> 3 == 0:
            return fields, "field number 0"
        if wire == 0:
            value_at = pos
            err = read_varint(b, &pos, end, &n)
            if err:
                return fields, _VARINT_ERRORS[err]
        elif wire == 2:
            err = read_varint(b, &pos, end, &n)
            if err:
                return fields, _VARINT_ERRORS[err]
            value_at = pos
            if n > <unsigned long long>(end - pos):
                return fields, "a field runs past the end of its message"
            pos += <Py_ssize_t>n
        elif wire == 1 or wire == 5:
            value_at = pos
            if end - pos < (8 if wire == 1 else 4):
                return fields, "a field runs past the end of its message"
            pos += 8 if wire == 1 else 4
        else:
            return fields, f"wire type {wire}"
        fields.append((<object>(key >> 3), wire, key_at, value_at, pos))
        count += 1
    return fields, None
