"""A check of an HDF5 file's global heap collections before the HDF5 library reads them.

Keras stores its model config and version strings as variable-length strings, whose bytes live
in a global heap collection ("GCOL"). The HDF5 library walks a collection's objects when it
first reads one of them, each object header giving the next one's place; a free-space object
(index 0) of size 0 gives the place of the object itself, and the library loops there for good
(found by fuzzing: 80 bytes spliced into a Keras file; h5py's attribute read never returned,
in C, under a call Python cannot interrupt). Each collection is walked here the same way first,
and a walk that would not advance, or would leave its collection, refuses the file.

Layout (HDF5 file format specification, "Global Heap"): "GCOL", version 1, 3 reserved bytes,
the collection size (the file's "size of lengths" bytes, from the superblock), then objects:
index (2 bytes), reference count (2), reserved (4), size (size of lengths), data padded to 8
bytes; an object of index 0 is the free space, its size counting its own header.

A variable-length value in an attribute or dataset refers to its object as: its length (4
bytes: bytes of a string, elements of a sequence), the collection's address ("size of offsets"
bytes) and the object's index (4 bytes). The library allocates that length before it reads the
object and compares their sizes (a fuzzed 23 KB file whose version string claimed 2 GB: 2 GB
resident, then an error). So each collection's address is looked for in the file, and where
the 4 bytes after it name one of its objects, the length before it must not exceed that
object's size (a string's length is its size; a sequence's, its size over the element size).
A reference to something else (no collection there, an index it lacks) is allocated for all
the same before the library finds out, so the attributes the importer reads (READ_ATTRIBUTES)
are found by name too: where one holds variable-length values, their lengths together must
not claim more bytes than the file has (each value of a file as written is an object of its
own). Attribute message layout ("Attribute Message", versions 1-3): version, flags, name size,
datatype size, dataspace size (2 bytes each), [name encoding], then the name, the datatype and
the dataspace (each padded to 8 bytes in version 1) and the data. Such an attribute's
variable-length datatype must also be of a kind HDF5 knows (a sequence or a string): the library
reading one of another kind crashed the process (fuzzing: one byte of a Keras file's model_config
datatype). Not seen by these checks: an attribute whose datatype is a shared (committed) one
or whose messages sit in a filtered (compressed) heap; Keras writes neither.
"""
from __future__ import annotations

import struct

import numpy as np

from fastcnn.errors import ModelFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
COLLECTION_SIGNATURE = b"GCOL"
# Objects walked per file at most: a Keras file's collections hold a few strings; a hostile one
# of millions of tiny objects would keep this Python loop busy for seconds.
MAX_OBJECTS = 1_000_000


def _field_sizes(buf) -> tuple | None:
    """The superblock's (size of offsets, size of lengths): bytes of an address (None unless
    2, 4 or 8: references are then not checked) and of a length field; None where buf has no
    superblock this check reads (then the library refuses or reads the file on its own)."""
    at = 0
    while at + 16 <= len(buf):
        if buf[at:at + 8] == HDF5_SIGNATURE:
            version = buf[at + 8]
            if version in (0, 1):
                sizes = buf[at + 13], buf[at + 14]
            elif version in (2, 3):
                sizes = buf[at + 9], buf[at + 10]
            else:
                return None
            if sizes[1] not in (2, 4, 8):
                return None
            return (sizes[0] if sizes[0] in (2, 4, 8) else None), sizes[1]
        at = 512 if at == 0 else at * 2   # the superblock's possible places (after a user block)
    return None


def _read_length(buf, at: int, size: int) -> int:
    """The little-endian unsigned integer of `size` bytes at `at`."""
    return int.from_bytes(buf[at:at + size], "little")


def check_global_heaps(buf, where: str) -> None:
    """Walk every global heap collection of the HDF5 file in `buf` (bytes or a mapped file) as
    the HDF5 library does; raise ModelFileError naming `where` and the offset when one would
    loop (a free-space object of size 0) or an object runs past its collection, where a
    variable-length value claims more than the object it refers to holds, or where an
    attribute the importer reads (READ_ATTRIBUTES) claims more bytes than the file has."""
    sizes = _field_sizes(buf)
    if sizes is None:
        return
    offset_size, length_size = sizes
    header = 8 + length_size          # signature, version, reserved, collection size
    object_header = 8 + length_size   # index, references, reserved, object size
    end_of_file = len(buf)
    budget = [MAX_OBJECTS]
    collections = {}                  # start -> {object index: size}
    start = buf.find(COLLECTION_SIGNATURE)
    while start != -1:
        fields_end = start + header
        if (fields_end <= end_of_file and buf[start + 4] == 1
                and buf[start + 5:start + 8] == b"\0\0\0"):
            size = _read_length(buf, start + 8, length_size)
            end = start + size
            if header < size and end <= end_of_file:   # else the library refuses it itself
                collections[start] = _walk(buf, start, fields_end, end, object_header,
                                           length_size, where, budget)
        start = buf.find(COLLECTION_SIGNATURE, start + 1)
    if offset_size is None:
        return
    _check_read_attributes(buf, offset_size, length_size, where)
    if len(collections) <= FIND_COLLECTIONS:
        for start in collections:
            address = start.to_bytes(offset_size, "little")
            at = buf.find(address, 4)
            while at != -1:
                _check_reference(buf, at, start, collections, offset_size, where)
                at = buf.find(address, at + 1)
    elif collections:
        for at, start in _addresses_in(buf, sorted(collections), offset_size):
            _check_reference(buf, at, start, collections, offset_size, where)


# Collections whose references are looked for one at a time (bytes.find over the file each);
# more (a few hundred in a hostile file of 4 KB collections) are found in one numpy pass
FIND_COLLECTIONS = 8
# Words compared at a time in that pass: its temporaries stay a few MB for any file size
PASS_WORDS = 1 << 18


def _addresses_in(buf, starts, offset_size):
    """(position, value) of every place in buf from byte 4 on whose offset_size bytes, read as
    a little-endian integer, are one of the sorted `starts`: one pass per byte alignment, in
    blocks of PASS_WORDS words."""
    values = np.asarray(starts, np.uint64)
    kind = {2: "<u2", 4: "<u4", 8: "<u8"}[offset_size]
    found = []
    for shift in range(offset_size):
        count = (len(buf) - shift) // offset_size
        for first in range(0, max(count, 0), PASS_WORDS):
            n = min(PASS_WORDS, count - first)
            words = np.frombuffer(buf, kind, n, shift + first * offset_size).astype(np.uint64)
            slot = np.minimum(np.searchsorted(values, words), len(values) - 1)
            for i in np.flatnonzero(values[slot] == words):
                at = shift + (first + int(i)) * offset_size
                if at >= 4:
                    found.append((at, int(words[i])))
    return sorted(found)


def _check_reference(buf, at, start, collections, offset_size, where) -> None:
    """The address of the collection at `start` is at byte `at`: where the 4 bytes after it
    are the index of one of its objects, refuse a length (the 4 bytes before) beyond the
    object's size. Other bytes that match the address are followed by an index of this
    collection only by chance, and a real reference never fails the test."""
    if at + offset_size + 4 > len(buf):
        return
    index = _read_length(buf, at + offset_size, 4)
    size = collections[start].get(index)
    if size is None:
        return
    length = _read_length(buf, at - 4, 4)
    if length > size:
        raise ModelFileError(
            f"{where}: corrupt HDF5 file: the variable-length value at byte {at - 4} claims "
            f"{length} items of object {index} of the global heap collection at byte {start}, "
            f"which holds {size} bytes")


def _walk(buf, start, p, end, object_header, length_size, where, budget) -> dict:
    """Walk one collection; returns its objects' sizes by index (not the free space)."""
    objects = {}
    while p < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise ModelFileError(f"{where}: corrupt HDF5 file: more than {MAX_OBJECTS} objects "
                                 f"in its global heap collections")
        if p + object_header > end:
            return objects   # too small for an object: the library takes it as free space
        index = struct.unpack_from("<H", buf, p)[0]
        size = _read_length(buf, p + 8, length_size)
        need = object_header + (size + 7) // 8 * 8 if index > 0 else size
        if need == 0:
            raise ModelFileError(
                f"{where}: corrupt HDF5 file: the global heap collection at byte {start} has a "
                f"free-space object of size 0 at byte {p} (the HDF5 library would never finish "
                f"reading it)")
        if p + need > end:
            raise ModelFileError(
                f"{where}: corrupt HDF5 file: object {index} of the global heap collection at "
                f"byte {start} needs {need} bytes at byte {p}, past the collection's end at "
                f"byte {end}")
        if index > 0:
            objects[index] = size
        p += need
    return objects


# The attributes the Keras importer reads (keras/__init__.py), by name; CHUNKED ones also in
# Keras' chunked form (weight_names0, weight_names1, ...: keras/__init__._attr_list)
READ_ATTRIBUTES = (b"model_config", b"keras_version", b"weight_names")
CHUNKED = (b"weight_names",)
VLEN_CLASS = 9
VLEN_KINDS = (0, 1)   # the datatype's type field: sequence, string


def _check_read_attributes(buf, offset_size, length_size, where) -> None:
    """Find each attribute message named in READ_ATTRIBUTES and refuse one whose
    variable-length values claim more bytes, together, than the file holds."""
    for base in READ_ATTRIBUTES:
        at = buf.find(base)
        while at != -1:
            end = at + len(base)
            if base in CHUNKED:
                while end < len(buf) and 48 <= buf[end] <= 57:   # chunk digits
                    end += 1
            if end < len(buf) and buf[end] == 0:
                _check_attribute(buf, at, end + 1 - at, offset_size, length_size, where)
            at = buf.find(base, at + 1)


def _check_attribute(buf, name_at, name_size, offset_size, length_size, where) -> None:
    """The attribute message whose name (name_size bytes with its NUL) is at name_at, if the
    bytes before it are the header of one (version 1 or 2 eight bytes before, 3 nine)."""
    for header, versions in ((name_at - 8, (1, 2)), (name_at - 9, (3,))):
        if header < 0 or buf[header] not in versions or _read_length(buf, header + 2, 2) != name_size:
            continue
        padded = buf[header] == 1
        pad = (lambda n: (n + 7) // 8 * 8) if padded else (lambda n: n)
        dt_at = name_at + pad(name_size)
        ds_at = dt_at + pad(_read_length(buf, header + 4, 2))
        data_at = ds_at + pad(_read_length(buf, header + 6, 2))
        if data_at > len(buf) or dt_at + 16 > len(buf) or buf[dt_at] & 0x0F != VLEN_CLASS:
            continue
        kind = buf[dt_at + 1] & 0x0F
        if kind not in VLEN_KINDS:
            # neither a sequence nor a string: the HDF5 library reading it crashed the process
            # (SIGSEGV; fuzz finding, .h5 seed 2608: one byte of model_config's datatype)
            name = bytes(buf[name_at:name_at + name_size - 1]).decode("ascii", "replace")
            raise ModelFileError(
                f"{where}: corrupt HDF5 file: attribute '{name}' (at byte {header}) has a "
                f"variable-length datatype of kind {kind}; HDF5 knows 0 (sequence) and 1 "
                f"(string)")
        count = _elements(buf, ds_at, length_size)
        stride = 4 + offset_size + 4       # length, collection address, object index
        if count is None or count == 0 or data_at + count * stride > len(buf):
            continue   # no values, or more than the message holds: the library refuses it
        string = buf[dt_at + 1] & 0x0F == 1
        item = 1 if string else max(1, _read_length(buf, dt_at + 12, 4))
        lengths = np.ndarray((count,), "<u4", buf, data_at, (stride,))
        claimed = int(lengths.sum(dtype=np.uint64)) * item
        if claimed > len(buf):
            name = bytes(buf[name_at:name_at + name_size - 1]).decode("ascii", "replace")
            raise ModelFileError(
                f"{where}: corrupt HDF5 file: attribute '{name}' (at byte {header}) holds "
                f"{count} variable-length value(s) claiming {claimed} bytes, more than the "
                f"file's {len(buf)}")


def _elements(buf, at, length_size) -> int | None:
    """Elements of the dataspace message at `at` (versions 1 and 2), or None if unreadable."""
    if at + 8 > len(buf):
        return None
    version, rank = buf[at], buf[at + 1]
    if version == 1:
        dims_at = at + 8
    elif version == 2:
        kind = buf[at + 3]
        if kind in (0, 2):
            return 1 if kind == 0 else 0   # scalar, null
        dims_at = at + 4
    else:
        return None
    if dims_at + rank * length_size > len(buf):
        return None
    count = 1
    for i in range(rank):
        count *= _read_length(buf, dims_at + i * length_size, length_size)
    return count
