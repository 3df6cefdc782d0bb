"""Deprecated: QDQ quantization for the Qualcomm NPU moved to the qnn backend, ``edgesdk_backends.qnn``.

Kept one release so code written against ``edgesdk.npu_quant`` keeps working; import
``quantize_for_npu``, ``load_calibration`` and ``NpuQuantReport`` from ``edgesdk_backends.qnn``.
"""

from __future__ import annotations

import warnings

warnings.warn("edgesdk.npu_quant is deprecated: import quantize_for_npu from edgesdk_backends.qnn", DeprecationWarning, stacklevel=2)

from edgesdk_backends.qnn._quant import (
    ACTIVATION_TYPES,
    METHODS,
    WEIGHT_TYPES,
    NpuQuantReport,
    load_calibration,
    quantize_for_npu,
)

__all__ = ["ACTIVATION_TYPES", "METHODS", "WEIGHT_TYPES", "NpuQuantReport", "load_calibration", "quantize_for_npu"]
