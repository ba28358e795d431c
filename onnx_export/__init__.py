"""ONNX export, onnxruntime inference and the model server.

`export` writes ONNX graphs and a manifest (`latentsearch export-onnx`), `runtime` runs them with
onnxruntime behind the same interfaces as the PyTorch models (selected when `models.embedder` /
`models.extractor_adapter` point at an export folder), `manifest` describes an export; `serve/` is the model server.
Importing this package loads nothing heavy.
"""
