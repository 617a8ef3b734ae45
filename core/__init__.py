"""dermaseg engine: images, Med-SAM segmentation, geometry, measurements, COCO, project store.

No gradio and no torch in this package: every capability is usable from plain Python.
"""
