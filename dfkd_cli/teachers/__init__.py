"""Teachers: loading any teacher for distillation, the store of teachers dfkd trained, the spec of a
teacher from elsewhere, foreign model files (TorchScript, ONNX), scikit-learn teachers, a
checkpoint as a model of raw units."""
