"""Export to ONNX Runtime's com.microsoft.MatMulNBits layout.

MatMulNBits dequantizes B[n, blk, :] as (code - zero_point) * scale with codes packed
two per byte low-nibble-first (4-bit) or one per byte (8-bit), K padded per block.
Symmetric tensors omit zero points (ORT's default is 2**(bits-1), our offset).
Asymmetric (Q4_1-style d, m) export float zero points zp = -m/d, exact up to fp32
rounding; a constant block (d == 0) is written as codes 0, scale 1, zp = -m.
"""

from __future__ import annotations

import numpy as np

from .._errors import QuantizationError
from ._tensor import QuantizedTensor

__all__ = ["to_matmulnbits", "matmulnbits_model"]


def to_matmulnbits(qt: QuantizedTensor) -> dict:
    """Initializers and attributes for a MatMulNBits node computing x @ W.T.

    Returns dict(B, scales, zero_points (or None), K, N, bits, block_size).
    """
    n, k = qt.shape
    bs = qt.block_size
    if bs >= k:  # per-channel: MatMulNBits wants a power-of-two block >= 16
        bs = max(16, 1 << (k - 1).bit_length())
    if bs & (bs - 1) or bs < 16:
        raise QuantizationError(f"MatMulNBits needs a power-of-two block size >= 16, got {qt.block_size}")
    nb = -(-k // bs)
    codes = qt.codes()  # (N, K), 8-bit biased == MatMulNBits' unsigned codes with zp 128
    full = np.full((n, nb * bs), qt.offset, np.uint8)
    full[:, :k] = codes
    d = qt.scale_matrix()  # (N, nblk) float32, nblk == nb by construction
    zp = None
    if qt.scheme == "asym":
        m = qt.min_matrix()
        flat = d == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.where(flat, -m, -m / np.where(flat, 1, d)).astype(np.float32)
        d = np.where(flat, np.float32(1), d).astype(np.float32)
        if flat.any():
            blk = full.reshape(n, nb, bs)
            blk[flat] = 0
    if qt.bits == 4:
        pairs = full.reshape(n, nb, bs // 2, 2)
        B = (pairs[..., 0] | (pairs[..., 1] << 4)).astype(np.uint8)
    else:
        B = full.reshape(n, nb, bs)
    return {
        "B": np.ascontiguousarray(B),
        "scales": np.ascontiguousarray(d.reshape(-1), dtype=np.float32),
        "zero_points": None if zp is None else np.ascontiguousarray(zp.reshape(-1)),
        "K": k,
        "N": n,
        "bits": qt.bits,
        "block_size": bs,
    }


def matmulnbits_model(qt: QuantizedTensor, *, accuracy_level: int = 0, opset: int = 21):
    """A one-node ONNX model Y = MatMulNBits(X, W) with X float32 [M, K] (M dynamic)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    p = to_matmulnbits(qt)
    inits = [numpy_helper.from_array(p["B"], "B"), numpy_helper.from_array(p["scales"], "scales")]
    inputs = ["X", "B", "scales"]
    if p["zero_points"] is not None:
        inits.append(numpy_helper.from_array(p["zero_points"], "zero_points"))
        inputs.append("zero_points")
    node = helper.make_node(
        "MatMulNBits",
        inputs,
        ["Y"],
        domain="com.microsoft",
        K=p["K"],
        N=p["N"],
        bits=p["bits"],
        block_size=p["block_size"],
        accuracy_level=accuracy_level,
    )
    graph = helper.make_graph(
        [node],
        "matmulnbits",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["M", p["K"]])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["M", p["N"]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model
