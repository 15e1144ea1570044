"""Calibration and evaluation sets, Q/DQ quantizers and the accuracy gate.

Filled in by the converter issue. Importing this package imports nothing heavy.
"""
