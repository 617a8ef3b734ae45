"""Segmentation: prompts, the preprocessing contract, `Engine`/`Segmenter`/`MaskResult`, the embedding cache and
the runtimes (`backends/`) that run LiteMedSAM's encoder and decoders."""
