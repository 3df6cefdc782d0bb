"""Qualcomm NPU backend: onnxruntime-qnn HTP execution provider (a simulator on x86-64 Linux)."""
