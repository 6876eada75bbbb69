"""Runs inside tritonserver's Python-backend stubs: the Python models and the numerics they call.

The build vendors this package (with ``spec`` and ``people``) beside each model's ``model.py``;
it imports numpy, OpenCV, Pillow, simplejpeg and onnxruntime, never tritonclient; only the torch
flavour's engine (``torch_engine``) imports torch and our model code, from the server's interpreter.
"""
