"""Block-wise weight quantization: the tensor-type table, packed tensors, GGUF import/export, ORT export, error reports.

>>> qt = quantize(w, bits=4, block_size=32, scheme="sym")      # w: float (N, K)
>>> y = edgesdk.kernels.matmul(x, qt)                           # y = x @ W.T
>>> qk = kquantize(w, "Q4_K")                                   # llama.cpp's blocks, layout "gguf"
>>> quantize_gguf("model-f32.gguf", "model-q4_k_m.gguf", "Q4_K_M")   # a whole GGUF, llama-quantize's recipe
"""

from ._gguf import from_gguf, from_gguf_bytes, to_gguf_bytes
from ._gguf_quantize import FILE_TYPES, GGUFQuantReport, quantize_gguf
from ._kquant import encode_blocks, kquantize
from ._ort import matmulnbits_model, to_matmulnbits
from ._quantize import quantize
from ._report import QuantErrorReport, error_report, sqnr_db
from ._tensor import LAYOUT, QuantizedTensor
from ._types import TYPES, QuantType, quant_type

__all__ = [
    "QuantizedTensor",
    "LAYOUT",
    "quantize",
    "from_gguf",
    "from_gguf_bytes",
    "to_gguf_bytes",
    "kquantize",
    "encode_blocks",
    "quantize_gguf",
    "GGUFQuantReport",
    "FILE_TYPES",
    "TYPES",
    "QuantType",
    "quant_type",
    "to_matmulnbits",
    "matmulnbits_model",
    "error_report",
    "QuantErrorReport",
    "sqnr_db",
]
