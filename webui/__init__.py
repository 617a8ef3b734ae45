"""dermaseg's faces: the annotation page and the `dermaseg` command line."""

from dermaseg.core.offline import disable_telemetry

disable_telemetry()  # before gradio (and its huggingface_hub) or a runtime is imported by a module of this package
