"""RTMO multi-person pose estimation, served by NVIDIA Triton.

Data path: image bytes -> ``image_io`` (decode) -> ``letterbox`` -> engine
(``model`` exported by ``export``) -> ``postprocess`` (NMS + DCC decode) -> people.
"""
