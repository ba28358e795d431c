"""ONNX export, onnxruntime inference and the model server.

Not built yet: tracked by the ONNX/model-server issue. Importing this package is safe; it
exposes nothing until then.
"""
