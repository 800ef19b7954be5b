"""Mutators that turn a valid model file into a hostile one, deterministically from a seed.

Each target has a structure-aware mutator (it edits the parsed file: the .fcnn JSON header and
preamble with the checksum recomputed, the ONNX protobuf, the Keras config and weights) and falls
back to byte-level mutations (bit flips, truncation, interesting integers, spliced chunks) so
the parsers themselves are exercised too. `mutate(target, data, rng)` returns (bytes, label);
the label names the mutations applied, to make findings readable.
"""
from __future__ import annotations

import copy
import io
import json
import random
import struct
import zipfile
import zlib

INTERESTING_INTS = [0, 1, -1, 2, 3, 7, 64, 255, 256, 4096, 65535, 65536, 2 ** 31 - 1, 2 ** 31,
                    -2 ** 31, 2 ** 32, 2 ** 32 + 1, 2 ** 40, 2 ** 53, 2 ** 62, 2 ** 63 - 1,
                    -2 ** 63, 10 ** 6, 10 ** 9, 10 ** 12, 10 ** 18, -10 ** 9]
INTERESTING_FLOATS = [float("nan"), float("inf"), float("-inf"), 0.0, -0.0, 1e38, 3.5e38,
                      1e-45, 1e308, -1.0, 0.5]
# Attribute names the ONNX importer and the IR understand: mutations add them where they do not
# belong, and give them absurd values where they do.
ATTR_NAMES = ["kernel_shape", "strides", "pads", "dilations", "group", "auto_pad", "perm", "axis",
              "axes", "blocksize", "mode", "alpha", "beta", "gamma", "epsilon", "keepdims",
              "ceil_mode", "count_include_pad", "transA", "transB", "to", "value", "split",
              "num_outputs", "start", "end", "p", "size", "allowzero", "min", "max", "activation",
              "activation_alpha", "storage_order", "noop_with_empty_axes", "dtype", "approximate",
              "select_last_index", "fmod", "bias", "pieces", "scales", "sizes",
              "coordinate_transformation_mode", "output_padding", "output_shape",
              "cubic_coeff_a", "exclude_outside", "extrapolation_value", "nearest_mode", "compare"]
ONNX_OPS = ["Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool",
            "GlobalMaxPool", "BatchNormalization", "InstanceNormalization", "LayerNormalization",
            "LRN", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Softmax", "LogSoftmax", "Exp",
            "Log", "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Sum", "Max", "Equal", "Greater", "Less",
            "LessOrEqual", "Where", "Not",
            "Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose",
            "Concat", "Split", "Slice", "Pad", "Expand", "Tile", "Gather", "DepthToSpace",
            "SpaceToDepth", "ReduceMean", "ReduceMax", "ReduceProd", "ArgMax", "Shape", "Size",
            "Cast", "Constant", "ConstantOfShape", "Range", "NonZero", "Resize", "ConvTranspose",
            "Upsample", "TopK", "If", "Loop", "Scan", "NoSuchOp"]


def ir_ops() -> list:
    """The IR's operator names (those of the installed fastcnn, so new ops get fuzzed too)."""
    try:
        from fastcnn.ir.ops import OPS
        return sorted(OPS) + ["NoSuchOp", ""]
    except ImportError:
        return ONNX_OPS


# ----------------------------------------------------------------------------- bytes
def mutate_bytes(data: bytes, rng: random.Random, rounds: int = 0) -> tuple:
    """Byte-level mutations; returns (bytes, label)."""
    b = bytearray(data)
    labels = []
    for _ in range(rounds or rng.choice([1, 1, 1, 2, 3, 8])):
        op = rng.randrange(8)
        if not b:
            b = bytearray(rng.randbytes(rng.randrange(1, 64)))
            labels.append("random")
            continue
        pos = rng.randrange(len(b))
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
            labels.append(f"bitflip@{pos}")
        elif op == 1:
            b[pos] = rng.choice([0, 0xFF, 0x7F, 0x80, 0x01, rng.randrange(256)])
            labels.append(f"byte@{pos}")
        elif op == 2:
            cut = rng.randrange(len(b))
            del b[cut:]
            labels.append(f"truncate@{cut}")
        elif op == 3:
            n = rng.randrange(1, min(64, len(b) - pos) + 1)
            del b[pos:pos + n]
            labels.append(f"delete{n}@{pos}")
        elif op == 4:
            v = rng.choice(INTERESTING_INTS)
            size, fmt = rng.choice([(1, "<b"), (2, "<h"), (4, "<i"), (8, "<q")])
            lo, hi = -(1 << (8 * size - 1)), (1 << (8 * size)) - 1
            v = max(lo, min(hi, v))
            packed = struct.pack(fmt.upper() if v >= 1 << (8 * size - 1) else fmt, v)
            b[pos:pos + size] = packed
            labels.append(f"int{size * 8}={v}@{pos}")
        elif op == 5:
            src = rng.randrange(len(b))
            n = rng.randrange(1, min(256, len(b) - src) + 1)
            b[pos:pos] = b[src:src + n]
            labels.append(f"splice{n}@{pos}")
        elif op == 6:
            b[pos:pos] = rng.randbytes(rng.randrange(1, 32))
            labels.append(f"insert@{pos}")
        else:
            n = rng.randrange(1, min(16, len(b) - pos) + 1)
            b[pos:pos + n] = bytes(n) if rng.random() < 0.5 else b"\xff" * n
            labels.append(f"fill{n}@{pos}")
    return bytes(b), "bytes:" + ",".join(labels)


# ----------------------------------------------------------------------------- JSON values
def deep(depth: int, leaf=0, kind="list"):
    """A value nested `depth` levels deep (built iteratively: no recursion here)."""
    v = leaf
    for _ in range(depth):
        v = [v] if kind == "list" else {"a": v}
    return v


def _paths(obj, limit=20000):
    """Every (container, key) pair in a JSON tree, iteratively."""
    out, stack = [], [obj]
    while stack and len(out) < limit:
        c = stack.pop()
        items = c.items() if isinstance(c, dict) else enumerate(c) if isinstance(c, list) else ()
        for k, v in items:
            out.append((c, k))
            if isinstance(v, (dict, list)):
                stack.append(v)
    return out


def _strings(obj):
    return [c[k] for c, k in _paths(obj) if isinstance(c[k], str)]


def interesting_value(rng: random.Random, strings=()):
    r = rng.randrange(12)
    if r < 4:
        return rng.choice(INTERESTING_INTS)
    if r == 4:
        return rng.choice(INTERESTING_FLOATS)
    if r == 5:
        return rng.choice(["", "x", "NOTSET", "SAME_UPPER", "reflect", "float64", "int8", "bool",
                           "\x00", "\ud7ff", "a" * 1000] + list(strings)[:50])
    if r == 6:
        return rng.choice([None, True, False, {}, []])
    if r == 7:
        return [rng.choice(INTERESTING_INTS) for _ in range(rng.choice([1, 2, 3, 4, 8]))]
    if r == 8:
        return [rng.choice([0, 1, 2, -1, 3]) for _ in range(rng.choice([0, 1, 2, 4, 6]))]
    if r == 9:
        return deep(rng.choice([10, 500, 950, 1100, 5000, 100000]), kind=rng.choice(["list", "dict"]))
    if r == 10:
        return list(range(rng.choice([5000, 100000])))
    return rng.choice(INTERESTING_FLOATS + [1.5, -2.25, 1e10])


def mutate_json(obj, rng: random.Random) -> str:
    """Mutate one place of a JSON tree in place; returns a label."""
    paths = _paths(obj)
    if not paths:
        return "json:empty"
    c, k = rng.choice(paths)
    v = c[k]
    r = rng.randrange(10)
    if r < 3:
        c[k] = interesting_value(rng, _strings(obj))
        return f"json:set[{k!r:.20}]"
    if r == 3 and isinstance(v, int) and not isinstance(v, bool):
        c[k] = rng.choice([v + 1, v - 1, -v, v * 2, v * 1000, v + 2 ** 31, v - 2 ** 32])
        return f"json:arith[{k!r:.20}]"
    if r == 4 and isinstance(v, list):
        if v and rng.random() < 0.5:
            del v[rng.randrange(len(v))]
            return f"json:listdel[{k!r:.20}]"
        v.insert(rng.randrange(len(v) + 1), copy.deepcopy(rng.choice(v)) if v else 0)
        return f"json:listdup[{k!r:.20}]"
    if r == 5 and isinstance(c, dict):
        del c[k]
        return f"json:delkey[{k!r:.20}]"
    if r == 6 and isinstance(v, str):
        strings = _strings(obj)
        c[k] = rng.choice(strings + ["", "missing_tensor", v + "_x"])
        return f"json:rename[{k!r:.20}]"
    if r == 7 and isinstance(c, dict):
        c[rng.choice(ATTR_NAMES + ["unknown_key"])] = interesting_value(rng)
        return "json:addkey"
    if r == 8:
        c[k] = deep(rng.choice([50, 900, 990, 1200, 20000]), v, rng.choice(["list", "dict"]))
        return f"json:nest[{k!r:.20}]"
    c[k] = interesting_value(rng)
    return f"json:set2[{k!r:.20}]"


def dumps(obj) -> bytes:
    """JSON text of a mutated tree (deeply nested trees are written iteratively by json when
    possible; on RecursionError the caller falls back to another mutation)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode("utf-8")


# ----------------------------------------------------------------------------- .fcnn
def _fcnn_split(data: bytes):
    from fastcnn.format import fcnn
    fields = list(fcnn.PREAMBLE.unpack_from(data, 0))
    h_off, h_len, d_off = fields[3], fields[4], fields[5]
    header = json.loads(data[h_off:h_off + h_len])
    return fields, header, data[d_off:len(data) - 16]


def _fcnn_join(fields, header, tensor_data: bytes, raw_header: bytes = None,
               pad_to: int = 0) -> bytes:
    """Rebuild a .fcnn file around a (mutated) header: the data region is moved to the first
    64-aligned offset after the header and the table's absolute offsets are shifted with it,
    then a trailer with a correct CRC is appended. With `raw_header` the bytes and the preamble
    `fields` are written as given (preamble mutations), the data at its old offset."""
    from fastcnn.format import fcnn
    fields = list(fields)
    old_d_off = fields[5]
    if raw_header is None:
        tensors = header.get("tensors") if isinstance(header, dict) else None
        entries = [t for t in tensors if isinstance(t, dict) and isinstance(t.get("offset"), int)
                   and not isinstance(t.get("offset"), bool)] if isinstance(tensors, list) else []
        base = [t["offset"] for t in entries]
        d_off = old_d_off
        for _ in range(8):
            for t, off in zip(entries, base):
                t["offset"] = off + d_off - old_d_off
            hb = dumps(header)
            need = (64 + len(hb) + 63) // 64 * 64
            if need <= d_off:
                break
            d_off = need
        fields[4], fields[5] = len(hb), d_off
        pad_to = d_off
    else:
        hb = raw_header
    body = fcnn.PREAMBLE.pack(*fields) + hb
    if len(body) < pad_to:
        body += b"\0" * (pad_to - len(body))
    body += tensor_data
    return body + fcnn.TRAILER.pack(fcnn.TRAILER_MAGIC, zlib.crc32(body) & 0xFFFFFFFF, 0)


def similar_value(v, rng: random.Random):
    """A value of the same JSON type as `v`, made hostile (an int list keeps its shape mostly)."""
    if isinstance(v, bool) or v is None:
        return interesting_value(rng)
    if isinstance(v, int):
        return rng.choice(INTERESTING_INTS + [v + 1, v - 1, -v, 0])
    if isinstance(v, float):
        return rng.choice(INTERESTING_FLOATS + [-v, v * 1e30])
    if isinstance(v, str):
        return rng.choice(["", v.lower(), v + "X", "SAME_LOWER", "VALID", "constant", "reflect",
                           "edge", "wrap", "CRD", "DCR", "nearest", "linear", "cubic", "Relu",
                           "float64", "int64", "bool", "tanh", "none"])
    if isinstance(v, list):
        v = list(v)
        k = rng.randrange(4)
        if v and k < 2:
            v[rng.randrange(len(v))] = rng.choice(INTERESTING_INTS + [0, -1, 2, 3])
        elif k == 2 and v:
            del v[rng.randrange(len(v))]
        else:
            v.append(rng.choice([0, 1, 2, -1, 2 ** 31]))
        return v
    return interesting_value(rng)


TENSOR_DATA = {}  # id(header) -> bytearray of the tensor region, for value mutations


def _fcnn_tensor_values(header: dict, rng: random.Random) -> str:
    """Overwrite one element of a stored tensor: int tensors feed shapes, axes, pads, repeats
    (hostile values reach the shape functions), float tensors get NaN/Inf/huge weights."""
    import numpy as np
    data = TENSOR_DATA.get(id(header))
    tensors = [t for t in header["tensors"] if isinstance(t, dict)
               and isinstance(t.get("offset"), int) and isinstance(t.get("nbytes"), int)
               and t.get("dtype") in ("int64", "int32", "float32") and t["nbytes"] > 0]
    if data is None or not tensors:
        return "fcnn:values-none"
    t = rng.choice(tensors)
    dt = np.dtype(t["dtype"]).newbyteorder("<")
    d_off = TENSOR_DATA.get((id(header), "d_off"), 0)
    start = t["offset"] - d_off
    count = t["nbytes"] // dt.itemsize
    if start < 0 or start + t["nbytes"] > len(data) or count == 0:
        return "fcnn:values-none"
    view = np.frombuffer(data, dt, count=count, offset=start)
    i = rng.randrange(count)
    if dt.kind == "i":
        info = np.iinfo(dt)
        v = max(int(info.min), min(int(info.max), rng.choice(INTERESTING_INTS)))
    else:
        v = rng.choice(INTERESTING_FLOATS)
    view[i] = v
    return f"fcnn:value {t.get('name')!r:.30}[{i}]={v}"


def _list(v) -> list:
    return v if isinstance(v, list) else []


def _fcnn_structural(header: dict, rng: random.Random) -> str:
    g = header.get("graph") if isinstance(header, dict) else None
    nodes = g.get("nodes") if isinstance(g, dict) else None
    tensors = header.get("tensors") if isinstance(header, dict) else None
    r = rng.randrange(13)
    if isinstance(tensors, list) and tensors and r == 12:
        return _fcnn_tensor_values(header, rng)
    if isinstance(nodes, list) and nodes and all(isinstance(n, dict) for n in nodes):
        n = rng.choice(nodes)
        outputs = [o for m in nodes for o in _list(m.get("outputs")) if isinstance(o, str)]
        if r == 0:
            n["op"] = rng.choice(ir_ops())
            return f"fcnn:op={n['op']}"
        if r == 1 and isinstance(n.get("inputs"), list) and outputs:
            # a cycle (or a self-loop): read a value produced later (or by this node)
            i = rng.randrange(len(n["inputs"]) + 1)
            val = rng.choice(outputs)
            if i < len(n["inputs"]):
                n["inputs"][i] = val
            else:
                n["inputs"].append(val)
            return f"fcnn:input={val}"
        if r == 2:
            attrs = n.setdefault("attrs", {})
            if isinstance(attrs, dict):
                name = rng.choice(list(attrs) + ATTR_NAMES) if attrs and rng.random() < 0.7 else rng.choice(ATTR_NAMES)
                attrs[name] = similar_value(attrs.get(name), rng) if rng.random() < 0.7 \
                    else interesting_value(rng)
                return f"fcnn:attr {name}"
        if r == 3 and isinstance(n.get("outputs"), list) and outputs:
            n["outputs"].append(rng.choice(outputs + ["extra"]))
            return "fcnn:dup-output"
        if r == 4:
            nodes.insert(rng.randrange(len(nodes) + 1), copy.deepcopy(n))
            return "fcnn:dup-node"
        if r == 5:
            nodes.remove(n)
            return "fcnn:del-node"
        if r == 6 and isinstance(n.get("inputs"), list):
            n["inputs"] = n["inputs"][: rng.randrange(len(n["inputs"]) + 1)] + \
                [""] * rng.randrange(3)
            return "fcnn:inputs-cut"
    if isinstance(tensors, list) and tensors and r == 11:
        return _fcnn_tensor_values(header, rng)
    if isinstance(tensors, list) and tensors and r in (7, 8, 9):
        t = rng.choice(tensors)
        if isinstance(t, dict):
            key = rng.choice(["shape", "nbytes", "offset", "dtype", "name"])
            if key == "shape" and isinstance(t.get("shape"), list) and t["shape"]:
                t["shape"][rng.randrange(len(t["shape"]))] = rng.choice(INTERESTING_INTS)
                if rng.random() < 0.5:  # keep nbytes consistent: reach the allocation checks
                    import math
                    try:
                        t["nbytes"] = math.prod(t["shape"]) * 4
                    except TypeError:
                        pass
            elif key == "dtype":
                t["dtype"] = rng.choice(["float64", "int64", "int8", "bool", "float16", "object",
                                         "complex64", "U8", "V16"])
            else:
                t[key] = interesting_value(rng, _strings(header))
            return f"fcnn:tensor.{key}"
    if r == 10 and isinstance(g, dict) and isinstance(g.get("inputs"), list) and g["inputs"]:
        spec = rng.choice(g["inputs"])
        if isinstance(spec, dict) and isinstance(spec.get("shape"), list) and spec["shape"]:
            spec["shape"][rng.randrange(len(spec["shape"]))] = rng.choice(INTERESTING_INTS + [None])
            return "fcnn:input-shape"
    return mutate_json(header, rng)


def mutate_fcnn(data: bytes, rng: random.Random) -> tuple:
    r = rng.random()
    if r < 0.15:
        out, label = mutate_bytes(data, rng)
        if rng.random() < 0.7 and len(out) > 80:  # keep the checksum right: reach the parser
            from fastcnn.format import fcnn
            body = out[:-16]
            out = body + fcnn.TRAILER.pack(fcnn.TRAILER_MAGIC, zlib.crc32(body) & 0xFFFFFFFF, 0)
            label += "+crc"
        return out, label
    fields, header, tensor_data = _fcnn_split(data)
    if r < 0.25:
        old_d_off = fields[5]
        i = rng.randrange(1, 7)
        v = rng.choice([0, 1, 2, 63, 64, 65, 128, fields[i] + 1, fields[i] - 1, 2 ** 31, 2 ** 32,
                        2 ** 63 - 1, 2 ** 64 - 1])
        fields[i] = max(0, min(v, 2 ** 64 - 1 if i >= 3 else 2 ** 32 - 1))
        raw = data[64:64 + _fcnn_split_len(data)]
        return (_fcnn_join(fields, None, tensor_data, raw_header=raw, pad_to=old_d_off),
                f"fcnn:preamble[{i}]={v}")
    if r < 0.3:
        # tensor bytes changed, checksum right: weights are data, any float is allowed
        tb = bytearray(tensor_data)
        if tb:
            for _ in range(rng.randrange(1, 8)):
                tb[rng.randrange(len(tb))] = rng.randrange(256)
        return _fcnn_join(fields, header, bytes(tb)), "fcnn:tensor-bytes"
    tensor_data = bytearray(tensor_data)
    TENSOR_DATA.clear()
    TENSOR_DATA[id(header)] = tensor_data
    TENSOR_DATA[(id(header), "d_off")] = fields[5]
    try:
        labels = [_fcnn_structural(header, rng) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
    finally:
        TENSOR_DATA.clear()
    tensor_data = bytes(tensor_data)
    try:
        out = _fcnn_join(fields, header, tensor_data)
    except (RecursionError, ValueError):
        return mutate_bytes(data, rng)
    if rng.random() < 0.03:
        # a header cut short, with the preamble and checksum agreeing with the cut
        fields2, _, _ = _fcnn_split(data)
        hb = dumps(header)
        cut = hb[: rng.randrange(len(hb))]
        fields2[4] = len(cut)
        return (_fcnn_join(fields2, None, tensor_data, raw_header=cut, pad_to=fields2[5]),
                "+".join(labels + ["header-cut"]))
    return out, "+".join(labels)


def _fcnn_split_len(data: bytes) -> int:
    from fastcnn.format import fcnn
    return fcnn.PREAMBLE.unpack_from(data, 0)[4]


# ----------------------------------------------------------------------------- ONNX
def _onnx_attr_mutation(node, rng):
    from onnx import AttributeProto, helper
    if node.attribute and rng.random() < 0.6:
        a = rng.choice(list(node.attribute))
        t = a.type
        if t == AttributeProto.INT:
            a.i = rng.choice(INTERESTING_INTS + [a.i + 1, a.i - 1, -a.i])
        elif t == AttributeProto.INTS:
            vals = list(a.ints) or [1]
            choice = rng.randrange(4)
            if choice == 0:
                vals[rng.randrange(len(vals))] = rng.choice(INTERESTING_INTS)
            elif choice == 1:
                vals = vals[:-1]
            elif choice == 2:
                vals = vals + [rng.choice([0, 1, -1, 2 ** 31])]
            else:
                vals = [rng.choice(INTERESTING_INTS)] * rng.choice([0, 1, 2, 4, 8, 10000])
            del a.ints[:]
            a.ints.extend(vals)
        elif t == AttributeProto.FLOAT:
            a.f = rng.choice(INTERESTING_FLOATS)
        elif t == AttributeProto.FLOATS:
            vals = list(a.floats) or [1.0]
            vals[rng.randrange(len(vals))] = rng.choice(INTERESTING_FLOATS)
            del a.floats[:]
            a.floats.extend(vals)
        elif t == AttributeProto.STRING:
            a.s = rng.choice([b"", b"SAME_LOWER", b"VALID", b"\xff\xfe", b"reflect", b"wrap",
                              b"DCR", b"x" * 10000])
        elif t == AttributeProto.TENSOR:
            _tensor_mutation(a.t, rng)
        else:
            a.type = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 11])
        if rng.random() < 0.1:
            a.type = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0])
        return f"onnx:attr {a.name}"
    name = rng.choice(ATTR_NAMES)
    kind = rng.randrange(4)
    if kind == 0:
        value = rng.choice(INTERESTING_INTS)
    elif kind == 1:
        value = [rng.choice(INTERESTING_INTS) for _ in range(rng.choice([1, 2, 4]))]
    elif kind == 2:
        value = rng.choice(INTERESTING_FLOATS)
    else:
        value = rng.choice(["SAME_UPPER", "NOTSET", "edge", "CRD", "linear"])
    try:
        node.attribute.append(helper.make_attribute(name, value))
    except (ValueError, TypeError):
        pass
    return f"onnx:addattr {name}"


def _tensor_mutation(t, rng):
    r = rng.randrange(8)
    if r == 0 and len(t.dims):
        t.dims[rng.randrange(len(t.dims))] = rng.choice(INTERESTING_INTS)
        return "dims"
    if r == 1:
        t.data_type = rng.choice([0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 99])
        return "dtype"
    if r == 2 and t.raw_data:
        t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))]
        return "raw-cut"
    if r == 3:
        t.dims.extend([rng.choice([1, 2, 0, 2 ** 31, 2 ** 40])])
        return "rank+"
    if r == 4:
        del t.dims[:]
        t.dims.extend([rng.choice([2 ** 20, 2 ** 31, 2 ** 33])] * rng.choice([2, 3, 4]))
        return "huge-dims"
    if r == 5:
        # declared as external data that is absent / outside the model folder / a device
        t.data_location = 1
        del t.external_data[:]
        e = t.external_data.add()
        e.key = "location"
        e.value = rng.choice(["missing.bin", "/dev/zero", "../../../../etc/passwd", "/proc/self/mem",
                              ".", "\x00", "/dev/urandom"])
        if rng.random() < 0.5:
            e = t.external_data.add()
            e.key = "length"
            e.value = str(rng.choice([1, 2 ** 20, 2 ** 40, -1]))
        return "external"
    if r == 6:
        t.raw_data = t.raw_data + rng.randbytes(rng.choice([1, 3, 4, 64]))
        return "raw-extra"
    del t.dims[:]
    t.dims.extend([rng.choice([0, -1, -2 ** 31, 3])])
    return "dims-neg"


def _tensor_values(t, rng) -> str:
    """Overwrite one element of an initializer, keeping its type and shape."""
    import numpy as np
    from onnx import numpy_helper
    try:
        arr = numpy_helper.to_array(t).copy()
    except Exception:  # noqa: BLE001 - an earlier mutation made it undecodable
        return "none"
    if arr.size == 0 or arr.dtype.kind not in "iuf":
        return "none"
    flat = arr.reshape(-1)
    i = rng.randrange(flat.size)
    if arr.dtype.kind in "iu":
        info = np.iinfo(arr.dtype)
        flat[i] = max(int(info.min), min(int(info.max), rng.choice(INTERESTING_INTS)))
    else:
        flat[i] = rng.choice(INTERESTING_FLOATS)
    t.CopyFrom(numpy_helper.from_array(arr, t.name))
    return f"{t.name}[{i}]={flat[i]}"


def mutate_onnx_model(model, rng: random.Random) -> str:
    """Mutate an onnx.ModelProto in place; returns a label."""
    g = model.graph
    names = [x for n in g.node for x in list(n.input) + list(n.output)] + [t.name for t in g.initializer]
    r = rng.randrange(16)
    if (r <= 2 or r >= 14) and len(g.node):
        return _onnx_attr_mutation(rng.choice(list(g.node)), rng)
    if r == 3 and len(g.node):
        n = rng.choice(list(g.node))
        n.op_type = rng.choice(ONNX_OPS)
        return f"onnx:op={n.op_type}"
    if r == 4 and len(g.node) and names:
        n = rng.choice(list(g.node))
        seq = n.input if rng.random() < 0.7 or not len(n.output) else n.output
        val = rng.choice(names + ["", "dangling", n.output[0] if len(n.output) else "o"])
        if len(seq) and rng.random() < 0.7:
            seq[rng.randrange(len(seq))] = val
        else:
            seq.append(val)
        return f"onnx:rewire={val}"
    if r == 5 and len(g.initializer):
        t = rng.choice(list(g.initializer))
        if rng.random() < 0.5:
            return "onnx:init-value " + _tensor_values(t, rng)
        return "onnx:init " + _tensor_mutation(t, rng)
    if r == 6 and len(g.input):
        vi = rng.choice(list(g.input))
        tt = vi.type.tensor_type
        c = rng.randrange(4)
        if c == 0 and len(tt.shape.dim):
            d = tt.shape.dim[rng.randrange(len(tt.shape.dim))]
            d.dim_value = rng.choice([0, 1, 2 ** 20, 2 ** 31, 2 ** 40, 2 ** 62, -5])
        elif c == 1:
            tt.elem_type = rng.choice([0, 2, 6, 7, 9, 10, 11, 16, 99])
        elif c == 2:
            tt.shape.dim.add().dim_value = rng.choice([1, 3, 2 ** 31])
        else:
            vi.type.ClearField("tensor_type")
        return "onnx:input-type"
    if r == 7:
        op = rng.choice(list(model.opset_import)) if len(model.opset_import) else model.opset_import.add()
        op.version = rng.choice([0, 1, 5, 6, 7, 9, 11, 13, 18, 22, 23, 99, -1, 2 ** 40])
        if rng.random() < 0.2:
            op.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "x"])
        return f"onnx:opset={op.version}"
    if r == 8 and len(g.node) > 1:
        nodes = list(g.node)
        rng.shuffle(nodes)
        del g.node[:]
        g.node.extend(nodes)
        return "onnx:shuffle"
    if r == 9 and len(g.node):
        n = rng.choice(list(g.node))
        if rng.random() < 0.5:
            g.node.remove(n)
            return "onnx:del-node"
        g.node.append(copy.deepcopy(n))
        return "onnx:dup-node"
    if r == 10:
        # a Constant node with an absurd value, feeding an existing node
        from onnx import helper
        k = rng.choice([1, 2, 4])
        vals = [max(-2 ** 63, min(2 ** 63 - 1, rng.choice(INTERESTING_INTS))) for _ in range(k)]
        t = helper.make_tensor("c", 7, [k], vals)
        if rng.random() < 0.5:
            _tensor_mutation(t, rng)
        out = rng.choice(names) if names and rng.random() < 0.5 else "konst"
        g.node.insert(0, helper.make_node("Constant", [], [out], value=t))
        return "onnx:constant"
    if r == 11 and len(g.node):
        # a subgraph attribute (If/Loop bodies): nested graphs are refused, never executed
        from onnx import helper
        n = rng.choice(list(g.node))
        n.attribute.append(helper.make_attribute("then_branch", copy.deepcopy(g)))
        return "onnx:subgraph"
    if r == 12 and len(g.output):
        vi = rng.choice(list(g.output))
        vi.name = rng.choice(names + ["dangling", ""]) if names else "dangling"
        return "onnx:output-name"
    if len(g.node):
        return _onnx_attr_mutation(rng.choice(list(g.node)), rng)
    return "onnx:none"


def mutate_onnx(data: bytes, rng: random.Random) -> tuple:
    if rng.random() < 0.2:
        return mutate_bytes(data, rng)
    import onnx
    model = onnx.ModelProto()
    model.ParseFromString(data)
    labels = [mutate_onnx_model(model, rng) for _ in range(rng.choice([1, 1, 1, 2, 3, 5]))]
    try:
        out = model.SerializeToString()
    except Exception:
        return mutate_bytes(data, rng)
    return out, "+".join(labels)


# ----------------------------------------------------------------------------- Keras
KERAS_CLASSES = ["InputLayer", "Conv2D", "Conv1D", "DepthwiseConv2D", "SeparableConv2D",
                 "Conv2DTranspose", "Dense", "BatchNormalization", "MaxPooling2D",
                 "AveragePooling2D", "GlobalAveragePooling2D", "Flatten", "Reshape", "Permute",
                 "Dropout", "Activation", "ReLU", "LeakyReLU", "Softmax", "Add", "Concatenate",
                 "ZeroPadding2D", "Cropping2D", "UpSampling2D", "Lambda", "TFOpLambda",
                 "Functional", "Sequential", "NoSuchLayer"]


def _keras_structural(config, rng):
    layers = None
    try:
        layers = config["config"]["layers"]
    except (KeyError, TypeError):
        pass
    r = rng.randrange(6)
    if isinstance(layers, list) and layers:
        lay = rng.choice(layers)
        if isinstance(lay, dict):
            cfg = lay.get("config") if isinstance(lay.get("config"), dict) else None
            if r == 0:
                lay["class_name"] = rng.choice(KERAS_CLASSES)
                return f"keras:class={lay['class_name']}"
            if r == 1 and cfg is not None:
                key = rng.choice(list(cfg) + ["filters", "kernel_size", "strides", "units",
                                              "pool_size", "padding", "dilation_rate", "groups",
                                              "axis", "target_shape", "dims", "size",
                                              "batch_input_shape", "activation", "function"])
                cfg[key] = interesting_value(rng)
                return f"keras:cfg.{key}"
            if r == 2 and isinstance(lay.get("inbound_nodes"), list):
                names = [x.get("name") for x in layers if isinstance(x, dict)]
                lay["inbound_nodes"] = [[[rng.choice(names + ["dangling"]), 0, 0, {}]]]
                return "keras:inbound"
            if r == 3:
                layers.insert(rng.randrange(len(layers) + 1), copy.deepcopy(lay))
                return "keras:dup-layer"
    return mutate_json(config, rng)


def _keras_weights_mutation(weights: dict, rng) -> str:
    import numpy as np
    names = [n for n, ws in weights.items() if ws]
    if not names:
        return "keras:w-none"
    n = rng.choice(names)
    ws = weights[n]
    i = rng.randrange(len(ws))
    wname, arr = ws[i]
    r = rng.randrange(6)
    if r == 0:
        ws[i] = (wname, arr.reshape(-1)[: max(0, arr.size - rng.randrange(1, 4))])
    elif r == 1:
        ws[i] = (wname, arr.astype(rng.choice([np.float64, np.float16, np.int8, np.int64, bool])))
    elif r == 2:
        del ws[i]
    elif r == 3:
        ws.append((f"extra_{i}:0", arr))
    elif r == 4:
        ws[i] = (wname, np.full(arr.shape, rng.choice([np.nan, np.inf, 1e38]), np.float32))
    else:
        ws[i] = (wname, np.zeros((0,) + arr.shape[1:], np.float32))
    return f"keras:w {n}.{wname}"


def mutate_h5(data: bytes, rng: random.Random, tmp_path: str, byte_level: bool = True) -> tuple:
    """Mutate a Keras .h5 (HDF5) or .keras (zip) file. Structural mutations rebuild the file with
    h5py from its parsed config and weights. byte_level=False leaves out raw byte corruption of
    the HDF5 container, which can hang libhdf5 itself (a C loop nothing in Python can stop)."""
    if byte_level and rng.random() < 0.2:
        return mutate_bytes(data, rng)
    import fuzz_seeds
    is_zip = data[:4] == b"PK\x03\x04"
    config, weights = _read_keras(data, is_zip, tmp_path)
    if config is None:
        return mutate_bytes(data, rng) if byte_level else (data, "keras:unchanged")
    labels = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        if rng.random() < 0.3:
            labels.append(_keras_weights_mutation(weights, rng))
        else:
            labels.append(_keras_structural(config, rng))
    if is_zip and rng.random() < 0.1:
        member = rng.choice(["config.json", "model.weights.h5"])
        return zip_bomb(member), f"keras:zip-bomb {member}"
    try:
        if is_zip:
            fuzz_seeds.write_keras_v3(tmp_path, config, weights)
        else:
            fuzz_seeds.write_keras_h5(tmp_path, config, weights)
    except (RecursionError, ValueError, TypeError, KeyError, AttributeError):
        return mutate_bytes(data, rng) if byte_level else (data, "keras:unchanged")
    with open(tmp_path, "rb") as f:
        return f.read(), "+".join(labels)


_ZIP_BOMBS = {}


def zip_bomb(member: str = "config.json") -> bytes:
    """A .keras file of a few hundred KB whose `member` inflates to 256 MB (whitespace for the
    config, zeros for the weights)."""
    if member not in _ZIP_BOMBS:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("metadata.json", "{}")
            if member != "config.json":
                z.writestr("config.json", json.dumps({"class_name": "Sequential",
                                                      "config": {"name": "s", "layers": []}}))
            with z.open(member, "w", force_zip64=True) as f:
                chunk = (b" " if member == "config.json" else b"\0") * (1 << 20)
                if member == "config.json":
                    f.write(b"[")
                for _ in range(256):
                    f.write(chunk)
                if member == "config.json":
                    f.write(b"]")
            if member != "model.weights.h5":
                z.writestr("model.weights.h5", b"")
        _ZIP_BOMBS[member] = buf.getvalue()
    return _ZIP_BOMBS[member]


def _read_keras(data: bytes, is_zip: bool, tmp_path: str):
    """(config dict, {layer: [(weight name, array)]}) of a seed-shaped Keras file."""
    import h5py
    import numpy as np
    try:
        if is_zip:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                config = json.loads(z.read("config.json"))
                wbytes = z.read("model.weights.h5")
            import fuzz_seeds
            by_key = {k: n for n, k in fuzz_seeds.keras3_keys(config).items()}
            weights = {}
            with h5py.File(io.BytesIO(wbytes), "r") as h:
                for key in h["layers"]:
                    v = h["layers"][key]["vars"]
                    weights[by_key.get(key, key)] = [(k, np.array(v[k])) for k in sorted(v, key=int)]
            return config, weights
        with open(tmp_path, "wb") as f:
            f.write(data)
        with h5py.File(tmp_path, "r") as f:
            config = json.loads(f.attrs["model_config"])
            weights = {}
            mw = f["model_weights"]
            for n in mw.attrs["layer_names"]:
                n = n.decode()
                g = mw[n]
                weights[n] = [(w.decode().split("/", 1)[1], np.array(g[w.decode()]))
                              for w in g.attrs["weight_names"]]
            return config, weights
    except Exception:
        return None, None


def mutate(target: str, data: bytes, rng: random.Random, tmp_path: str,
           byte_level: bool = True) -> tuple:
    """(mutated bytes, label) for target 'fcnn', 'onnx' or 'h5' (byte_level: see mutate_h5)."""
    if target == "fcnn":
        return mutate_fcnn(data, rng)
    if target == "onnx":
        return mutate_onnx(data, rng)
    return mutate_h5(data, rng, tmp_path, byte_level)
