"""The native .fcnn format: one file, data only, loads zero-copy through a read-only mmap.

Layout (all integers little-endian):

    offset 0   preamble, 64 bytes
               magic        8 bytes  b"FCNN\\0\\r\\n\\x1a"   (PNG-style: catches text-mode mangling)
               version      u32      FORMAT_VERSION
               flags        u32      0 (reserved)
               header_off   u64      64
               header_len   u64      bytes of UTF-8 JSON
               data_off     u64      first tensor byte, a multiple of 64
               data_len     u64      bytes of the tensor region
               reserved     16 bytes zero
    header     JSON: {"format": "fcnn", "version", "producer", "graph": {name, inputs, outputs,
               nodes}, "tensors": [{name, dtype, shape, offset, nbytes}], "metadata": {...}}
    tensors    raw little-endian C-order arrays, each at a 64-byte-aligned absolute offset
    trailer    16 bytes: b"FCNNCRC\\0", u32 CRC-32 of every byte before the trailer, u32 zero

Nothing in the file is executed: the header is parsed as JSON data and validated; tensor sizes
are checked against the file before any array is created. `save` writes a temporary file in the
destination's directory, fsyncs it and renames it over the destination.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import tempfile
import zlib

import numpy as np

from fastcnn.errors import ModelFileError
from fastcnn.format.mapping import MappedFile
from fastcnn.ir.graph import DTYPES, ITEMSIZE, Graph, Node, TensorSpec
from fastcnn.ir.weights import without_weight_scales

MAGIC = b"FCNN\x00\r\n\x1a"
TRAILER_MAGIC = b"FCNNCRC\x00"
FORMAT_VERSION = 1
ALIGN = 64
PREAMBLE = struct.Struct("<8sIIQQQQ16x")  # 64 bytes
TRAILER = struct.Struct("<8sII")          # 16 bytes
assert PREAMBLE.size == 64 and TRAILER.size == 16


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# ----------------------------------------------------------------------------- writing
def header_dict(graph: Graph, tensors: list) -> dict:
    from fastcnn import __version__
    return {
        "format": "fcnn",
        "version": FORMAT_VERSION,
        "producer": f"fastcnn {__version__}",
        "graph": {
            "name": graph.name,
            "inputs": [t.to_json() for t in graph.inputs],
            "outputs": [t.to_json() for t in graph.outputs],
            "nodes": [n.to_json() for n in graph.nodes],
        },
        "tensors": tensors,
        "metadata": graph.metadata,
        **({"passes": graph.passes_applied} if getattr(graph, "passes_applied", None) else {}),
    }


def save(graph: Graph, path: str) -> None:
    """Write `graph` (its nodes, initializers and metadata) to `path` atomically.

    Raises ModelFileError when the graph holds something .fcnn cannot store or the file cannot
    be written; the file at `path`, if any, is then left as it was."""
    # a Conv's weight_scale is applied here: the file holds the weights the layer computes
    # with, read in place when it is loaded
    graph = without_weight_scales(graph)
    labels = graph.metadata.get("labels")
    if labels is not None and not _is_str_list(labels):
        raise ModelFileError(f"{path}: metadata 'labels' must be a list of strings, got {labels!r:.80}")
    arrays = []
    table = []
    for name, arr in graph.initializers.items():
        arr = np.asarray(arr)
        if arr.dtype.name not in DTYPES:
            raise ModelFileError(f"{path}: tensor '{name}' has dtype {arr.dtype}, which .fcnn cannot store")
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        arrays.append(np.ascontiguousarray(le))
        table.append({"name": name, "dtype": arr.dtype.name, "shape": [int(d) for d in arr.shape],
                      "offset": 0, "nbytes": int(arr.nbytes)})
    # A longer header moves the data further, which can lengthen the offsets' digits: grow
    # data_off until the header written with it fits in front of it (monotone, so this ends).
    data_off = 0
    while True:
        off = data_off
        for entry in table:
            entry["offset"] = off
            off = _align(off + entry["nbytes"])
        try:
            # Python's json writes inf/nan attributes (Clip bounds) as Infinity/NaN and reads
            # them back; the header is only ever read by this module.
            header = json.dumps(header_dict(graph, table), separators=(",", ":")).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:
            raise ModelFileError(f"{path}: metadata or attributes are not JSON data ({e})") from None
        need = _align(64 + len(header))
        if need <= data_off:
            break
        data_off = need
    data_len = (table[-1]["offset"] + table[-1]["nbytes"] - data_off) if table else 0

    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ModelFileError(f"{path}: is a directory; give a file name to save the model to")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".fcnn-", suffix=".tmp", dir=directory)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates the file private (0600); give it the mode a plain open() would.
            os.chmod(tmp, 0o666 & ~_umask())
            crc = 0

            def write(b):
                nonlocal crc
                f.write(b)
                crc = zlib.crc32(b, crc)

            write(PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, 64, len(header), data_off, data_len))
            write(header)
            write(b"\0" * (data_off - 64 - len(header)))  # the data region starts aligned
            pos = data_off
            for entry, arr in zip(table, arrays):
                if entry["offset"] > pos:
                    write(b"\0" * (entry["offset"] - pos))
                    pos = entry["offset"]
                write(memoryview(arr).cast("B") if arr.size else b"")
                pos += entry["nbytes"]
            f.write(TRAILER.pack(TRAILER_MAGIC, crc & 0xFFFFFFFF, 0))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # disk full, permissions, ...: the old file is untouched
            raise ModelFileError(f"{path}: cannot write ({e.strerror or e}); "
                                 f"the existing file, if any, is unchanged") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0o022)  # read it (the only portable way) and put it back at once
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- reading
_LITTLE_ENDIAN = {name: np.dtype(name).newbyteorder("<") for name in DTYPES}  # the file's byte order


def _bad(path, msg):
    return ModelFileError(f"{path}: {msg}")


def _expect(path, cond, msg):
    if not cond:
        raise _bad(path, msg)


def _is_str_list(v):
    return isinstance(v, list) and all(isinstance(s, str) for s in v)


def _spec(path, d, what) -> TensorSpec:
    _expect(path, isinstance(d, dict) and isinstance(d.get("name"), str), f"bad {what} entry")
    shape = d.get("shape")
    _expect(path, isinstance(shape, list) and len(shape) <= 64 and
            all(s is None or (isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2 ** 31)
                for s in shape), f"{what} '{d['name']}' has an invalid shape {shape!r:.80}")
    dtype = d.get("dtype", "float32")
    _expect(path, dtype in DTYPES, f"{what} '{d['name']}' has an unknown dtype {dtype!r:.40}")
    layout = d.get("layout", "")
    _expect(path, isinstance(layout, str), f"{what} '{d['name']}' has an invalid layout")
    return TensorSpec(d["name"], tuple(shape), dtype, layout)


def read_header(path: str, buf) -> tuple:
    """Validate preamble, trailer and checksum of a mapped file; return (header dict, data range)."""
    size = len(buf)
    _expect(path, size >= 64 + 16, f"file too short ({size} bytes) to be a .fcnn model")
    magic, version, flags, h_off, h_len, d_off, d_len = PREAMBLE.unpack_from(buf, 0)
    _expect(path, magic == MAGIC, "not a .fcnn file (bad magic bytes)")
    if version > FORMAT_VERSION:
        raise _bad(path, f"written in .fcnn format version {version}, newer than this fastcnn reads "
                         f"(version {FORMAT_VERSION}); upgrade fastcnn to load it")
    _expect(path, version >= 1, f"invalid format version {version}")
    _expect(path, flags == 0, f"unknown flags {flags:#x}")
    t_magic, crc, _ = TRAILER.unpack_from(buf, size - 16)
    _expect(path, t_magic == TRAILER_MAGIC, "the file is truncated or corrupt (no trailer)")
    actual = 0
    view = memoryview(buf)
    step = 16 << 20
    for start in range(0, size - 16, step):
        actual = zlib.crc32(view[start:min(start + step, size - 16)], actual)
        if isinstance(buf, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            # checked: let these pages go, so that checking a file never keeps all of it
            # resident (planning touches the weights it needs, one layer at a time)
            try:
                buf.madvise(mmap.MADV_DONTNEED, start, min(step, size - start))
            except (OSError, ValueError):
                pass
    view.release()
    if actual & 0xFFFFFFFF != crc:
        raise _bad(path, f"checksum mismatch (stored {crc:#010x}, computed {actual & 0xFFFFFFFF:#010x}): "
                         f"the file is corrupt")
    _expect(path, h_off == 64 and 0 < h_len <= size - 16 - 64, "invalid header location")
    _expect(path, d_off % ALIGN == 0 and h_off + h_len <= d_off <= size - 16 and
            d_len <= size - 16 - d_off, "invalid tensor data location")
    raw = bytes(buf[h_off:h_off + h_len])
    nests_within = json_nests_within(raw, MAX_NESTING)   # before parsing: its copies are gone by then
    try:
        text = raw.decode("utf-8")
        del raw                    # not alive beside the parsed header (a few MB for a hostile one)
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad(path, f"header is not valid JSON ({type(e).__name__}: {str(e)[:200]})") from None
    _expect(path, isinstance(header, dict) and header.get("format") == "fcnn", "header is not a .fcnn header")
    _expect(path, nests_within,
            f"header nests lists/objects deeper than {MAX_NESTING} levels")
    return header, d_off, d_off + d_len


MAX_NESTING = 64  # JSON levels in a header; deeper data would make repr() and json.dumps recurse
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_AS_PARENS = bytes.maketrans(b"[]{}", b"()()")


def json_nests_within(raw: bytes, limit: int) -> bool:
    """True when the lists/objects of JSON text `raw` nest at most `limit` levels (a top-level
    object is one). Byte-string operations only, no recursion and no walk in Python (walking
    the parsed header cost a twentieth of a small model's load time): drop escaped
    backslashes and quotes, keep quotes and brackets, drop what lies between quotes, then
    strip innermost bracket pairs one level per pass."""
    text = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    parens = b"".join(text.split(b'"')[0::2]).translate(_AS_PARENS)
    for _ in range(limit):
        if not parens:
            return True
        parens = parens.replace(b"()", b"")
    return not parens


def graph_from_header(path: str, header: dict, buf, d_start: int, d_end: int) -> Graph:
    g = header.get("graph")
    _expect(path, isinstance(g, dict), "header has no graph")
    _expect(path, isinstance(g.get("nodes"), list) and isinstance(g.get("inputs"), list) and
            isinstance(g.get("outputs"), list), "graph needs nodes, inputs and outputs lists")
    inputs = [_spec(path, d, "input") for d in g["inputs"]]
    outputs = [_spec(path, d, "output") for d in g["outputs"]]
    nodes = []
    # (the per-node and per-tensor checks raise directly: formatting every message up front,
    # as _expect takes it, was a fifth of reading a small model's header)
    for i, d in enumerate(g["nodes"]):
        if not (isinstance(d, dict) and isinstance(d.get("op"), str) and
                isinstance(d.get("name"), str) and _is_str_list(d.get("inputs")) and
                _is_str_list(d.get("outputs")) and isinstance(d.get("attrs", {}), dict)):
            raise _bad(path, f"node #{i} is malformed")
        nodes.append(Node(d["op"], d["name"], list(d["inputs"]), list(d["outputs"]), dict(d.get("attrs", {}))))
    tensors = header.get("tensors")
    _expect(path, isinstance(tensors, list), "header has no tensor table")
    initializers = {}
    for t in tensors:
        _expect(path, isinstance(t, dict) and isinstance(t.get("name"), str), "bad tensor table entry")
        name = t["name"]
        if name in initializers:
            raise _bad(path, f"tensor '{name}' appears twice")
        dtype, shape, off, nbytes = t.get("dtype"), t.get("shape"), t.get("offset"), t.get("nbytes")
        if dtype not in DTYPES:
            raise _bad(path, f"tensor '{name}' has an unknown dtype {dtype!r:.40}")
        if not (isinstance(shape, list) and len(shape) <= 64 and
                all(type(s) is int and 0 <= s < 2 ** 31 for s in shape)):
            raise _bad(path, f"tensor '{name}' has an invalid shape {shape!r:.80}")
        if not (type(off) is int and type(nbytes) is int and off >= 0 and nbytes >= 0):
            raise _bad(path, f"tensor '{name}' has an invalid offset or size")
        count = 1
        for s in shape:
            count *= s
        itemsize = ITEMSIZE[dtype]
        if count * itemsize != nbytes:
            raise _bad(path, f"tensor '{name}': shape {shape} of {dtype} needs {count * itemsize} "
                             f"bytes, the table says {nbytes}")
        if nbytes == 0:
            try:
                arr = np.zeros(shape, dtype)
            except (ValueError, MemoryError):  # e.g. [2**30, 2**30, 0]: no data, absurd dims
                raise _bad(path, f"tensor '{name}' has an invalid shape {shape!r:.80}") from None
        else:
            if not (off % ALIGN == 0 and d_start <= off and off + nbytes <= d_end):
                raise _bad(path, f"tensor '{name}' ({nbytes} bytes at offset {off}) lies outside "
                                 f"the data region")
            arr = np.frombuffer(buf, dtype=_LITTLE_ENDIAN[dtype], count=count, offset=off)
            arr = arr.reshape(shape)
            if not arr.dtype.isnative:
                arr = arr.astype(np.dtype(dtype))
        arr.setflags(write=False)
        initializers[name] = arr
    metadata = header.get("metadata", {})
    _expect(path, isinstance(metadata, dict), "metadata must be an object")
    labels = metadata.get("labels")
    _expect(path, labels is None or _is_str_list(labels),
            f"metadata 'labels' must be a list of strings, got {labels!r:.80}")
    passes = header.get("passes")
    _expect(path, passes is None or (isinstance(passes, str) and len(passes) <= 4096),
            f"'passes' must be a string, got {passes!r:.80}")
    name = g.get("name", "graph")
    graph = Graph(name if isinstance(name, str) else "graph", inputs, outputs, nodes, initializers,
                  metadata, source=path)
    graph.passes_applied = passes   # loading skips the pass pipeline when it names the current one
    return graph


def load(path: str):
    """Read a .fcnn file. Returns (graph, MappedFile); weights are read-only views of the mapping."""
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ModelFileError(f"{path}: cannot open ({e.strerror or e})") from None
    try:
        size = os.fstat(f.fileno()).st_size
        if size < 64 + 16:
            raise _bad(path, f"file too short ({size} bytes) to be a .fcnn model")
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except BaseException:
        f.close()
        raise
    res = MappedFile(f, mm)
    try:
        header, d_start, d_end = read_header(path, mm)
        graph = graph_from_header(path, header, mm, d_start, d_end)
    except BaseException:
        res.close()
        raise
    return graph, res
