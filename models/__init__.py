"""Build time only: the LiteMedSAM checkpoint exported to the runtime's model artifacts (ONNX, CoreML, OpenVINO int8),
their parity checks, the click decoder's fine-tuning and the torch references. Needs the export extra (torch)."""
