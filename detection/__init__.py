"""Model side: YOLO pre/post-processing, tiling, the onnxruntime detector, synthetic data and training.

Only ``detection.train`` may import ultralytics or torch.
"""
