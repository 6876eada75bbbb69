"""Runs inside tritonserver's Python-backend stubs: the Python models and the numerics they call.

The build vendors this package (with ``spec`` and ``people``) beside each model's ``model.py``;
it imports numpy, OpenCV, Pillow, simplejpeg and onnxruntime only, never torch or tritonclient.
"""
