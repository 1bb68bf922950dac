"""The front end: load and check an ONNX model, bind its input shapes, fold shape subgraphs
(``model``); tensor and npz I/O (``tensors``); the onnxruntime reference (``reference``) and the one
way outputs are compared (``agreement``). Needs no TVM."""
