"""The TensorRT engine path, importable without TensorRT or a GPU.

- ``build``: ONNX → plan with TensorRT 10's Python API (``build_plan``, ``batch_profile``, ``typical_batch``).
- ``precision``: the layers an FP16 plan keeps in FP32 (the geometry scope of the exported graph).
- ``compat``: the build record beside the plan and the check of a plan against a host
  (``EngineRecord``, ``current_platform``, ``check_compat``, ``require_compat``, ``check_served``).
- ``python -m rtmo_triton.build.trt build|check|flavour``: the same from a shell (``flavour`` asks
  ``rtmo_triton.build.flavour`` which engine this host gets: trt, torch or onnx).
"""
