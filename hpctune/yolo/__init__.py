"""Everything Ultralytics: training arguments, spaces, optimizer resolution, the YOLO trainer, data."""
