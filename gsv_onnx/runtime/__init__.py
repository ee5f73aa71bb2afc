"""runtime package of gsv-onnx."""
