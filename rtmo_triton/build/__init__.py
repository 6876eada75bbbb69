"""Builds the model repository on the build machine: checkpoint → ONNX (→ TensorRT plan), configs,
and the Python models with the code and packages they bring into the server."""
