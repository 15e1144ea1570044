"""Workstation-side conversion: PyTorch -> verified ONNX -> FP16 / INT8 Q/DQ ONNX -> bundle.

Filled in by the converter issue. Importing this package imports nothing heavy.
"""
