"""RTMO multi-person pose estimation, served by NVIDIA Triton.

Data path inside the server: image bytes -> ``served.image_io`` (decode) -> ``served.letterbox``
-> engine (``model``, exported by ``build.export``) -> ``served.postprocess`` (NMS + DCC decode)
-> ``people``. Subpackages are named for the process that runs them: ``served`` (inside
tritonserver), ``build`` (the build machine), ``serve`` (beside the server), ``client`` (clients).
Benchmarks and the GPU check live outside the package, in the checkout's ``perf/``.
"""
