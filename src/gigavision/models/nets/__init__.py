"""The torch half of each task: networks, training targets, losses, ONNX export (imported by training and the
torch runtime only; ``models/<task>.py`` holds the torch-free half)."""
