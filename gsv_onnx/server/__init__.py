"""server package of gsv-onnx."""
