"""The runtimes that run LiteMedSAM: ONNX Runtime (every machine), OpenVINO (x86 CPUs), CoreML (Apple)."""
