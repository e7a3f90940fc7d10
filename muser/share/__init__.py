"""Sharing a trained model: the model card, `muser push` to the hub, and ONNX export for use without
PyTorch. An application on the library floor (it reads run folders as files; it imports no other
application)."""
