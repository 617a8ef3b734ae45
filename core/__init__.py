"""The dermaseg engine, usable without the page: images and calibration, segmentation (`segment`), interactive
prompting (`interactive`), annotation data and projects (`annotation`), and evaluation (`evaluation`).

No gradio and no torch in this package: every capability is usable from plain Python.
"""

from dermaseg.core.offline import disable_telemetry

disable_telemetry()  # before any runtime (ONNX Runtime, OpenVINO) is imported by a module of this package
