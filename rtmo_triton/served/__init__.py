"""Runs inside tritonserver's Python-backend stubs: the Python models and the numerics they call.

The build vendors this package (with ``spec`` and ``people``) beside each model's ``model.py``;
it imports numpy, OpenCV, Pillow, simplejpeg and onnxruntime, never tritonclient. Only the models that
say ``needs_torch`` import torch, from the server's interpreter (``torch_import``): the torch flavour's
engine (``torch_engine``, with our model code) and the GPU-resident stages of ``PREPROCESS=gpu``
(``gpu``).
"""
