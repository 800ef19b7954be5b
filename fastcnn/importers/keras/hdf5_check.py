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
"""
from __future__ import annotations

import struct

from fastcnn.errors import ModelFileError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
COLLECTION_SIGNATURE = b"GCOL"
# Objects walked per file at most: a Keras file's collections hold a few strings; a hostile one
# of millions of tiny objects would keep this Python loop busy for seconds.
MAX_OBJECTS = 1_000_000


def _size_of_lengths(buf) -> int | None:
    """The superblock's "size of lengths" (bytes of a length field), or None where buf has no
    superblock this check reads (then the library refuses or reads the file on its own)."""
    at = 0
    while at + 16 <= len(buf):
        if buf[at:at + 8] == HDF5_SIGNATURE:
            version = buf[at + 8]
            if version in (0, 1):
                size = buf[at + 14]
            elif version in (2, 3):
                size = buf[at + 10]
            else:
                return None
            return size if size in (2, 4, 8) else None
        at = 512 if at == 0 else at * 2   # the superblock's possible places (after a user block)
    return None


def _read_length(buf, at: int, size: int) -> int:
    return int.from_bytes(buf[at:at + size], "little")


def check_global_heaps(buf, where: str) -> None:
    """Walk every global heap collection of the HDF5 file in `buf` (bytes or a mapped file) as
    the HDF5 library does; raise ModelFileError naming `where` and the offset when one would
    loop (a free-space object of size 0) or an object runs past its collection."""
    length_size = _size_of_lengths(buf)
    if length_size is None:
        return
    header = 8 + length_size          # signature, version, reserved, collection size
    object_header = 8 + length_size   # index, references, reserved, object size
    end_of_file = len(buf)
    budget = [MAX_OBJECTS]
    start = buf.find(COLLECTION_SIGNATURE)
    while start != -1:
        fields_end = start + header
        if (fields_end <= end_of_file and buf[start + 4] == 1
                and buf[start + 5:start + 8] == b"\0\0\0"):
            size = _read_length(buf, start + 8, length_size)
            end = start + size
            if header < size and end <= end_of_file:   # else the library refuses it itself
                _walk(buf, start, fields_end, end, object_header, length_size, where, budget)
        start = buf.find(COLLECTION_SIGNATURE, start + 1)


def _walk(buf, start, p, end, object_header, length_size, where, budget) -> None:
    while p < end:
        budget[0] -= 1
        if budget[0] < 0:
            raise ModelFileError(f"{where}: corrupt HDF5 file: more than {MAX_OBJECTS} objects "
                                 f"in its global heap collections")
        if p + object_header > end:
            return   # too small for an object: the library takes it as free space
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
        p += need
