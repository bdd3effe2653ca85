"""Deployment: the fast inference path, tiled upscaling, ONNX export and runner, int8, efficiency counts."""
