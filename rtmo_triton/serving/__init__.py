"""The Triton side: model configs, the repository build, the server launcher and the model helpers."""
