"""dermaseg engine: images, Med-SAM segmentation, geometry, measurements, COCO, project store.

No gradio and no torch in this package: every capability is usable from plain Python.
"""

from dermaseg.core.offline import disable_telemetry

disable_telemetry()  # before any runtime (ONNX Runtime, OpenVINO) is imported by a module of this package
