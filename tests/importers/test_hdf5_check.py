"""hdf5_check.check_global_heaps: an HDF5 file whose global heap would make the HDF5 library
loop (a free-space object of size 0, found by fuzzing) or read past a collection is refused
before h5py opens it; Keras files as Keras writes them pass; the walk follows the superblock's
size of lengths and ignores "GCOL" bytes that are not a collection header."""
import os
import struct
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("h5py")

import fastcnn  # noqa: E402
from fastcnn.errors import ModelFileError  # noqa: E402
from fastcnn.importers.keras import hdf5_check  # noqa: E402
from fastcnn.importers.keras.hdf5_check import check_global_heaps  # noqa: E402
from helpers import run_isolated  # noqa: E402
from keras_writer import Net  # noqa: E402

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _keras_h5(tmp_path) -> bytes:
    net = Net("h5")
    x = net.input("x", (4,))
    y = net.add("Dense", "dense", [x], [("kernel", np.ones((4, 3))), ("bias", np.zeros(3))],
                units=3, activation="linear", use_bias=True)
    with open(net.save(tmp_path / "m.h5", [y]), "rb") as f:
        return f.read()


def _objects(buf: bytes, start: int):
    """(offset, index, size) of each object of the collection at start (8-byte lengths)."""
    size = struct.unpack_from("<Q", buf, start + 8)[0]
    p, out = start + 16, []
    while p + 16 <= start + size:
        index, _, _, osize = struct.unpack_from("<HHIQ", buf, p)
        out.append((p, index, osize))
        if index == 0:
            break
        p += 16 + (osize + 7) // 8 * 8
    return out


def test_keras_files_pass(tmp_path):
    buf = _keras_h5(tmp_path)
    assert buf.count(b"GCOL") == 1   # the model config and version strings
    check_global_heaps(buf, "m.h5")
    free = [o for o in _objects(buf, buf.index(b"GCOL")) if o[1] == 0]
    assert free and free[0][2] > 0


def test_a_free_space_object_of_size_zero_is_refused_without_hanging(tmp_path):
    """The fuzzed file's defect: loading it must end (in a child, with a deadline) with a
    ModelFileError naming the collection, never reach the HDF5 library's endless walk."""
    buf = bytearray(_keras_h5(tmp_path))
    start = buf.index(b"GCOL")
    at = [o for o in _objects(bytes(buf), start) if o[1] == 0][0][0]
    struct.pack_into("<Q", buf, at + 8, 0)
    with pytest.raises(ModelFileError, match=f"collection at byte {start} has a free-space object "
                                             f"of size 0 at byte {at}"):
        check_global_heaps(bytes(buf), "bad.h5")
    path = tmp_path / "bad.h5"
    path.write_bytes(bytes(buf))
    child = run_isolated(f"""
        import fastcnn
        try:
            fastcnn.load({str(path)!r})
        except fastcnn.ModelFileError as e:
            print("refused:", e)
        """, tmp_path, timeout=60)
    assert child.returncode == 0 and "refused:" in child.stdout and "size 0" in child.stdout, \
        child.stdout + child.stderr


def test_an_object_past_its_collection_is_refused(tmp_path):
    buf = bytearray(_keras_h5(tmp_path))
    start = buf.index(b"GCOL")
    first = _objects(bytes(buf), start)[0][0]
    struct.pack_into("<Q", buf, first + 8, 1 << 40)
    with pytest.raises(ModelFileError, match="needs .* bytes at byte .*past the collection's end"):
        check_global_heaps(bytes(buf), "bad.h5")
    with pytest.raises(ModelFileError):
        fastcnn.load(_write(tmp_path, "bad.h5", buf))


def _write(tmp_path, name, data) -> str:
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


def _collection(objects, length_size=8, total=None) -> bytes:
    """A collection of (index, data) objects then free space (index 0), lengths of
    length_size bytes."""
    head = 8 + length_size
    body = b""
    for index, data in objects:
        pad = (len(data) + 7) // 8 * 8
        body += struct.pack("<HHI", index, 1, 0) + len(data).to_bytes(length_size, "little") \
            + data.ljust(pad, b"\0")
    total = total or head + len(body) + 64
    free = total - head - len(body)
    body += struct.pack("<HHI", 0, 0, 0) + free.to_bytes(length_size, "little")
    return (b"GCOL\x01\0\0\0" + total.to_bytes(length_size, "little") + body).ljust(total, b"\0")


def _superblock(version, length_size) -> bytes:
    sb = bytearray(b"\x89HDF\r\n\x1a\n".ljust(64, b"\0"))
    sb[8] = version
    if version in (0, 1):
        sb[13], sb[14] = 8, length_size
    else:
        sb[9], sb[10] = 8, length_size
    return bytes(sb)


@pytest.mark.parametrize("version,length_size", [(0, 8), (2, 4), (3, 8)])
def test_the_walk_follows_the_superblocks_size_of_lengths(version, length_size):
    good = _superblock(version, length_size) + _collection([(1, b"config"), (2, b"2.13.1")],
                                                           length_size)
    check_global_heaps(good, "m.h5")
    head = 8 + length_size
    bad = bytearray(good)
    start = bad.index(b"GCOL")
    free_at = start + head + 2 * (8 + length_size + 8)   # after two 6-byte objects (padded to 8)
    assert bad[free_at:free_at + 2] == b"\0\0"
    bad[free_at + 8:free_at + 8 + length_size] = bytes(length_size)
    with pytest.raises(ModelFileError, match="size 0"):
        check_global_heaps(bytes(bad), "m.h5")


def test_gcol_bytes_that_are_no_collection_header_are_ignored():
    """Weights or strings may hold the four bytes: without version 1 and three zero bytes after
    them, or with a size past the file, they are not walked."""
    sb = _superblock(0, 8)
    size = (64).to_bytes(8, "little")   # then zeros: walked, a free-space object of size 0
    with pytest.raises(ModelFileError):
        check_global_heaps(sb + b"GCOL\x01\0\0\0" + size + bytes(48), "m.h5")
    for tail in (b"GCOL\x02\0\0\0" + size, b"GCOL\x01xy\0" + size,
                 b"GCOL\x01\0\0\0" + (1 << 50).to_bytes(8, "little"), b"GCOL"):
        check_global_heaps(sb + tail + bytes(48), "m.h5")
    check_global_heaps(b"no superblock GCOL\x01\0\0\0" + bytes(30), "m.h5")


def test_very_many_objects_are_refused(monkeypatch):
    buf = _superblock(0, 8) + _collection([(i, b"x") for i in range(1, 40)])
    check_global_heaps(buf, "m.h5")
    monkeypatch.setattr(hdf5_check, "MAX_OBJECTS", 20)
    with pytest.raises(ModelFileError, match="more than 20 objects"):
        check_global_heaps(buf, "m.h5")


def _refused_here_and_in_a_child(tmp_path, bad, match):
    """check_global_heaps refuses `bad` with a message matching `match`; loading it in a child
    process ends in a ModelFileError with a peak RSS under 500 MiB."""
    with pytest.raises(ModelFileError, match=match):
        check_global_heaps(bytes(bad), "bad.h5")
    path = _write(tmp_path, "bad.h5", bad)
    # the child's own peak (VmHWM): ru_maxrss would carry this test process's peak over
    child = run_isolated(f"""
        import sys, fastcnn
        sys.path.insert(0, {os.path.join(TESTS_DIR, "robustness")!r})
        from fuzz_runner import peak_rss_bytes
        try:
            fastcnn.load({path!r})
        except fastcnn.ModelFileError as e:
            print("refused:", e)
        print("peak MiB", peak_rss_bytes() // 2**20)
        """, tmp_path, timeout=60)
    assert child.returncode == 0 and "refused:" in child.stdout, child.stdout + child.stderr
    assert int(child.stdout.split("peak MiB")[1]) < 500, child.stdout


def _references(buf: bytes, start: int, objects: dict):
    """(offset of the length, index) of each reference to the collection at start: its 8-byte
    address followed by the index of one of its objects."""
    out, at = [], buf.find(start.to_bytes(8, "little"), 4)
    while at != -1:
        index = struct.unpack_from("<I", buf, at + 8)[0]
        if index in objects:
            out.append((at - 4, index))
        at = buf.find(start.to_bytes(8, "little"), at + 1)
    return out


def test_a_variable_length_value_longer_than_its_object_is_refused(tmp_path):
    """The fuzzed file's defect (a 23 KB file; the HDF5 library allocated and touched 2 GB for
    its version string before it compared sizes): a reference whose length exceeds the object
    it names is refused before h5py opens the file. In Keras files as written, every
    reference's length is its object's size."""
    good = _keras_h5(tmp_path)
    start = good.index(b"GCOL")
    objects = {index: size for _, index, size in _objects(good, start) if index}
    refs = _references(good, start, objects)
    assert len(refs) >= 2
    assert all(struct.unpack_from("<I", good, at)[0] == objects[index] for at, index in refs)
    at, index = refs[-1]
    bad = bytearray(good)
    struct.pack_into("<I", bad, at, 0x80000000 + objects[index])
    _refused_here_and_in_a_child(tmp_path, bad, f"variable-length value at byte {at} claims "
                                                f"{0x80000000 + objects[index]} items of object "
                                                f"{index} of the global heap collection at byte "
                                                f"{start}, which holds {objects[index]} bytes")
    # one item less than the object holds (a sequence of wider elements) is not refused here
    ok = bytearray(good)
    struct.pack_into("<I", ok, at, objects[index] - 1)
    check_global_heaps(bytes(ok), "m.h5")


@pytest.mark.parametrize("version,length_size", [(0, 8), (2, 4)])
def test_references_are_found_by_the_superblocks_size_of_offsets(version, length_size):
    """A reference (4-byte length, 8-byte collection address, 4-byte index) after the
    collection: its length is checked against the object's size; bytes that match the address
    but name no object of the collection are left alone."""
    sb = _superblock(version, length_size)
    col = _collection([(1, b"config"), (2, b"2.13.1")], length_size)
    start = len(sb)
    ref = lambda length, index: struct.pack("<I", length) + start.to_bytes(8, "little") \
        + struct.pack("<I", index)
    check_global_heaps(sb + col + ref(6, 2) + ref(1 << 31, 7), "m.h5")   # index 7: no object
    with pytest.raises(ModelFileError, match="claims 7 items of object 2"):
        check_global_heaps(sb + col + ref(6, 1) + ref(7, 2), "m.h5")


@pytest.mark.parametrize("find_collections", [0, 100])
def test_many_collections_are_checked_in_one_pass_alike(monkeypatch, find_collections):
    """Past FIND_COLLECTIONS collections the references are found in one numpy pass over the
    file (a file of many 4 KB collections would otherwise be scanned once per collection):
    both ways accept the same file and refuse the same reference, at any byte alignment."""
    monkeypatch.setattr(hdf5_check, "FIND_COLLECTIONS", find_collections)
    sb = _superblock(0, 8)
    blob, starts = sb, []
    for k in range(12):
        starts.append(len(blob))
        blob += _collection([(1, b"x" * (k + 1)), (2, b"yy")]) + b"\1" * (k % 5)  # odd offsets
    ref = lambda length, start, index: struct.pack("<I", length) + start.to_bytes(8, "little") \
        + struct.pack("<I", index)
    good = blob + b"\0" * 3 + b"".join(ref(k + 1, s, 1) + ref(2, s, 2) for k, s in enumerate(starts))
    check_global_heaps(good, "m.h5")
    bad = good + b"\0" + ref(12, starts[9], 1)    # object 1 of collection 9 holds 10 bytes
    with pytest.raises(ModelFileError, match=f"claims 12 items of object 1 of the global heap "
                                             f"collection at byte {starts[9]}, which holds 10"):
        check_global_heaps(bad, "m.h5")


def test_the_one_pass_search_works_in_blocks(monkeypatch):
    """Blocks of PASS_WORDS words: an address across a block boundary at every alignment is
    found, as by bytes.find."""
    monkeypatch.setattr(hdf5_check, "PASS_WORDS", 3)   # 24 bytes a block
    rng = np.random.default_rng(3)
    buf = bytearray(rng.integers(0, 256, 400, dtype=np.uint8).tobytes())
    starts = [4096, 70000]
    for at in (4, 13, 30, 47, 100, 161, 250, 264, 331, 377):   # every alignment mod 8
        buf[at:at + 8] = starts[at % 2].to_bytes(8, "little")
    want = sorted((at, v) for v in starts for at in range(4, len(buf) - 7)
                  if buf[at:at + 8] == v.to_bytes(8, "little"))
    assert hdf5_check._addresses_in(bytes(buf), starts, 8) == want and len(want) >= 10


def test_an_unusual_size_of_offsets_still_gets_the_walk():
    """A superblock whose size of offsets is not 2, 4 or 8: references are not looked for, the
    collections are still walked."""
    sb = bytearray(_superblock(0, 8))
    sb[13] = 16
    bad = bytearray(bytes(sb) + _collection([(1, b"config")]))
    start = bad.index(b"GCOL")
    free_at = start + 16 + 16 + 8
    bad[free_at + 8:free_at + 16] = bytes(8)
    with pytest.raises(ModelFileError, match="size 0"):
        check_global_heaps(bytes(bad), "m.h5")


@pytest.mark.parametrize("where_to", ["elsewhere", "missing index"])
def test_a_read_attribute_whose_values_claim_more_than_the_file_is_refused(tmp_path, where_to):
    """A reference that names no object of a collection is allocated for by the HDF5 library
    all the same (2 GB resident for these files before the check): the attributes the importer
    reads are found by name and their variable-length values' lengths bounded by the file."""
    good = _keras_h5(tmp_path)
    start = good.index(b"GCOL")
    objects = {index: size for _, index, size in _objects(good, start) if index}
    version_at = good.index(b"keras_version\0")
    at = min((a for a, _ in _references(good, start, objects) if a > version_at))
    bad = bytearray(good)
    struct.pack_into("<I", bad, at, 0x80000006)
    if where_to == "elsewhere":
        bad[at + 4:at + 12] = (start + 16).to_bytes(8, "little")
    else:
        struct.pack_into("<I", bad, at + 12, 999)
    _refused_here_and_in_a_child(tmp_path, bad, f"attribute 'keras_version' \\(at byte "
                                                f"{version_at - 8}\\) holds 1 variable-length "
                                                f"value\\(s\\) claiming 2147483654 bytes, more "
                                                f"than the file's {len(good)}")


def _attribute(version, name, lengths, string=True, ds_version=1, datatype_class=9):
    """An attribute message (versions 1-3) of variable-length values with these lengths, each
    referring to object 1 of a collection at byte 4096 (8-byte offsets and lengths)."""
    pad = (lambda b: b.ljust((len(b) + 7) // 8 * 8, b"\0")) if version == 1 else (lambda b: b)
    name = name + b"\0"
    base = struct.pack("<BBBBI", 0x10, 0, 0, 0, 1)                    # a 1-byte fixed type
    datatype = struct.pack("<BBBBI", 0x10 | datatype_class, 1 if string else 0, 0, 0, 16) + base
    n = len(lengths)
    if ds_version == 1:
        dataspace = struct.pack("<BBBBI", 1, 1, 0, 0, 0) + struct.pack("<Q", n)
    else:
        dataspace = struct.pack("<BBBB", 2, 1, 0, 1) + struct.pack("<Q", n)
    header = struct.pack("<BBHHH", version, 0, len(name), len(datatype), len(dataspace))
    if version == 3:
        header += b"\0"
    data = b"".join(struct.pack("<IQI", length, 4096, 1) for length in lengths)
    return header + pad(name) + pad(datatype) + pad(dataspace) + data


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("ds_version", [1, 2])
@pytest.mark.parametrize("name", [b"keras_version", b"model_config", b"weight_names", b"weight_names12"])
def test_read_attributes_are_found_in_every_message_layout(version, ds_version, name):
    sb = _superblock(0, 8)
    filler = b"\0" * 256
    ok = sb + filler + _attribute(version, name, [300, 300], ds_version=ds_version) + filler
    assert 600 <= len(ok) < 1100
    check_global_heaps(ok, "m.h5")   # 600 bytes claimed: within the file
    bad = sb + filler + _attribute(version, name, [700, 400], ds_version=ds_version) + filler
    with pytest.raises(ModelFileError, match=f"attribute '{name.decode()}' .* 2 variable-length "
                                             f"value\\(s\\) claiming 1100 bytes"):
        check_global_heaps(bad, "m.h5")


@pytest.mark.parametrize("kind", [2, 15])
def test_a_read_attribute_of_an_unknown_variable_length_kind_is_refused(tmp_path, kind):
    """A variable-length datatype is a sequence (0) or a string (1); the HDF5 library reading
    model_config with kind 2 or 15 crashed the process (SIGSEGV; fuzz finding, .h5 seed 2608,
    one byte changed). Refused before h5py opens the file; in a Keras file, in a child process
    (a crash there fails the test without taking pytest down)."""
    sb = _superblock(0, 8)
    good = _attribute(1, b"model_config", [10])
    bad = bytearray(good)
    dt_at = 8 + 16   # after the header (8 bytes) and the name (padded to 16)
    assert bad[dt_at] & 0x0F == 9 and bad[dt_at + 1] & 0x0F == 1
    bad[dt_at + 1] = (bad[dt_at + 1] & 0xF0) | kind
    check_global_heaps(sb + good + b"\0" * 64, "m.h5")
    with pytest.raises(ModelFileError, match=f"attribute 'model_config' .* variable-length "
                                             f"datatype of kind {kind}"):
        check_global_heaps(sb + bytes(bad) + b"\0" * 64, "m.h5")
    keras = bytearray(_keras_h5(tmp_path))
    at = keras.index(b"model_config\0") + 16     # version-1 message: the name padded to 16
    assert keras[at] & 0x0F == 9 and keras[at + 1] & 0x0F == 1
    keras[at + 1] = (keras[at + 1] & 0xF0) | kind
    _refused_here_and_in_a_child(tmp_path, keras, f"variable-length datatype of kind {kind}")


def test_other_attributes_and_fixed_types_are_left_to_the_library():
    """Only the attributes the importer reads, and only variable-length ones, are checked."""
    sb = _superblock(0, 8)
    huge = [1 << 31]
    check_global_heaps(sb + _attribute(1, b"backend", huge) + b"\0" * 64, "m.h5")
    check_global_heaps(sb + _attribute(1, b"keras_version", huge, datatype_class=3) + b"\0" * 64,
                       "m.h5")
    check_global_heaps(sb + _attribute(1, b"weight_namesX", huge) + b"\0" * 64, "m.h5")


def test_read_attributes_lists_every_attribute_the_importer_reads(tmp_path, monkeypatch):
    """READ_ATTRIBUTES must name what keras/__init__.py reads: record the attribute reads of a
    load through h5py (digits of Keras' chunked names stripped)."""
    import h5py
    read = set()
    original = h5py.AttributeManager.__getitem__

    def recording(self, name):
        read.add(name.rstrip("0123456789"))
        return original(self, name)

    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", recording)
    fastcnn.load(_write(tmp_path, "m.h5", _keras_h5(tmp_path)))
    assert {"model_config", "weight_names"} <= read   # what this file has to be read
    assert {n.encode() for n in read} <= set(hdf5_check.READ_ATTRIBUTES), read
