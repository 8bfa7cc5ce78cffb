"""The runtimes ``optimize`` shapes fused ops for (``--target``): a module of its own so that the
command line can offer them without importing the compiler."""

TARGETS = ("ort", "onnx", "openvino")
