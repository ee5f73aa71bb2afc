"""text package of gsv-onnx."""
