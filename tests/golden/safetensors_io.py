"""Minimal safetensors reader/writer for numpy arrays (F32, F64, I64; a few more for reading).

Format: an 8-byte little-endian unsigned header length N, N bytes of JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, optional "__metadata__": {str: str}},
then the data buffer; offsets are relative to the start of the buffer. Tensors are row-major,
little-endian. The header is padded with spaces to a multiple of 8 bytes.
"""
import json
import struct

import numpy as np

_TO_NUMPY = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


def _dtype_name(arr):
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder not in ("|", "<", "=") else arr.dtype
    for name, npdt in _TO_NUMPY.items():
        if dt == npdt:
            return name
    raise ValueError(f"safetensors: unsupported dtype {arr.dtype}")


def load(path):
    """Returns (tensors: dict name -> numpy array, metadata: dict or None)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header length {n} exceeds file size {len(raw)}")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n:]
    metadata = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        dtype_name = info["dtype"]
        if dtype_name not in _TO_NUMPY:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype_name}")
        dt = _TO_NUMPY[dtype_name]
        shape = tuple(int(s) for s in info["shape"])
        begin, end = (int(v) for v in info["data_offsets"])
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if end - begin != count * dt.itemsize or end > len(data) or begin < 0:
            raise ValueError(f"{path}: tensor {name!r} has bad data_offsets {begin}..{end} "
                             f"for shape {list(shape)} {dtype_name}")
        arr = np.frombuffer(data[begin:end], dtype=dt, count=count).reshape(shape).copy()
        tensors[name] = arr
    return tensors, metadata


def save(path, tensors, metadata=None):
    """Writes dict name -> numpy array (F32, F64, I64, ...). metadata: dict of str -> str."""
    header = {}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        arr = np.array(tensors[name], copy=False, order="C")  # keeps 0-d shape
        dtype_name = _dtype_name(arr)
        buf = arr.astype(_TO_NUMPY[dtype_name], copy=False).tobytes()
        header[name] = {"dtype": dtype_name, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(buf)]}
        chunks.append(buf)
        offset += len(buf)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for buf in chunks:
            f.write(buf)
