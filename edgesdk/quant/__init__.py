"""Block-wise INT4/INT8 weight quantization: packed tensors, GGUF import, ORT export, error reports.

>>> qt = quantize(w, bits=4, block_size=32, scheme="sym")      # w: float (N, K)
>>> y = edgesdk.kernels.matmul(x, qt)                           # y = x @ W.T
"""

from ._gguf import GGUF_TYPES, from_gguf, from_gguf_bytes, to_gguf_bytes
from ._ort import matmulnbits_model, to_matmulnbits
from ._quantize import quantize
from ._report import QuantErrorReport, error_report, sqnr_db
from ._tensor import LAYOUT, QuantizedTensor

__all__ = [
    "QuantizedTensor",
    "LAYOUT",
    "quantize",
    "from_gguf",
    "from_gguf_bytes",
    "to_gguf_bytes",
    "GGUF_TYPES",
    "to_matmulnbits",
    "matmulnbits_model",
    "error_report",
    "QuantErrorReport",
    "sqnr_db",
]
