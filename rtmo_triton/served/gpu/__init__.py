"""The served stages written in PyTorch, for the GPU-resident ensemble (``PREPROCESS=gpu``).

Every function here takes tensors on any device: on a GPU host they run on CUDA, in CI on the CPU,
where the tests hold them to the numpy/OpenCV stages they replace.
"""
