"""Models: the task contract and one module per task (timm / torchvision / segmentation-models-pytorch),
model directories, ONNX export and predictors."""
