"""The TensorRT engine path, importable without TensorRT or a GPU.

- ``build``: ONNX → plan with TensorRT 10's Python API (``build_plan``, ``batch_profile``).
- ``compat``: the build record beside the plan and the check of a plan against a host
  (``EngineRecord``, ``current_platform``, ``check_compat``, ``require_compat``, ``check_served``).
- ``flavour``: which engine a host gets (``choose_flavour``: trt or onnx).
- ``python -m rtmo_triton.trt build|check|flavour``: the same from a shell.
"""
