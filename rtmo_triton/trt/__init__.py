"""The TensorRT engine path: plan build, compatibility record, engine flavour choice."""
