"""ONNX Runtime backend: one encoder session and one decoder session on the CPU."""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from dermaseg.core.errors import ModelArtifactError
from dermaseg.core.segment.artifacts import REBUILD_HINT, VariantFiles
from dermaseg.core.segment.preprocess import DECODER_OUTPUTS, MASK_FEATURES, TUNED_OUTPUTS, DecoderInputs

# An encoder run gives back the chunks its arena grew by when it ends (the first chunk stays): RSS held after
# an fp32 encode 313 -> 9 MiB above the loaded session's (issue 18). Not the decoders': re-growing the arena
# on every click took the decoder from 32-33 to 45-50 ms p50 (A/B in one session) for ~19 MiB.
_RUN = ort.RunOptions()
_RUN.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


# How many decoder runs may go at once (the others wait): ORT's arena keeps the activations of as many runs
# as ever ran at once (~25 MiB each). 8 sessions prompting at once (`load_test --sessions 8 --prompts 20`,
# three alternated runs each): unbounded 937-943 MiB held (peak 943-966), 11.1-13.0 prompts/s; 2 at once
# 768-775 (809-824), 11.0-13.0; 1 at a time 742 (778-789) but 10.0-10.9: two runs at once, each on about one
# core, use 2 cores better than one run on both.
DECODER_RUNS_AT_ONCE = 2


class OnnxBackend:
    """Runs the exported LiteMedSAM graphs. Thread-safe: the encoder runs one at a time (below), the
    decoders at most DECODER_RUNS_AT_ONCE at a time.

    encode: float32 (1, 3, 256, 256) -> float32 (1, 256, 64, 64)
    decode: DecoderInputs -> low_res_logits (1, 4, 256, 256), iou_predictions (1, 4);
            tuned=True runs the variant's fine-tuned decoder (same inputs) when it has one.
    decode_features: the tuned decoder's decode, plus its mask_features (1, 32, 256, 256).
    """

    name = "onnx"

    def __init__(self, files: VariantFiles, threads: int = 2, encoder: bool = True) -> None:
        """encoder=False loads the decoders only (a backend running the encoder on another runtime)."""
        self.files = files
        self.model_id = files.model_id
        self.encoder_id = files.encoder_sha256
        # Memory pattern on the encoder doubled peak RSS on a second encode at the same speed; the
        # decoder keeps it (off, its p90 went from 26 to 58 ms). Measured, see the model notes.
        self._encoder = _session(files.encoder, threads, mem_pattern=False) if encoder else None
        # Each concurrent encoder run holds its own ~270 MiB of activations in ORT's arena, which keeps its
        # peak (1 / 2 / 4 at once: RSS 468 / 735 / 1284 MiB); one run already uses every core, so queueing
        # them costs no throughput and bounds the memory whatever the number of users and prefetches.
        self._encoder_lock = threading.Lock()
        self._tuned_decoder = (
            None if files.tuned_decoder is None else _session(files.tuned_decoder, threads, mem_pattern=True)
        )
        # The bundled decoder, loaded when first asked for if the tuned one answers the page's prompts (the
        # server never runs it then): `dermaseg serve` RSS idle 408 -> 385 MiB, one session 611 -> 585 MiB.
        self._threads = threads
        self._decoder_lock = threading.Lock()
        self._decoder_runs = threading.BoundedSemaphore(DECODER_RUNS_AT_ONCE)
        self._decoder = None if self._tuned_decoder is not None else _session(files.decoder, threads, mem_pattern=True)
        outputs = [] if self._tuned_decoder is None else [o.name for o in self._tuned_decoder.get_outputs()]
        self._tuned_features = MASK_FEATURES in outputs

    @property
    def has_tuned_decoder(self) -> bool:
        return self._tuned_decoder is not None

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self._encoder is None:
            raise ModelArtifactError("this ONNX backend was opened without its encoder")
        with self._encoder_lock:
            return self._encoder.run(None, {"image": x}, _RUN)[0]

    def decode(self, inputs: DecoderInputs, tuned: bool = False) -> tuple[np.ndarray, np.ndarray]:
        session = self._tuned_decoder if tuned and self._tuned_decoder is not None else self._base_decoder()
        with self._decoder_runs:
            logits, iou = session.run(list(DECODER_OUTPUTS), inputs.feed())
        return logits, iou

    def _base_decoder(self) -> ort.InferenceSession:
        """The bundled (box-trained) decoder's session, loaded on first use."""
        with self._decoder_lock:
            if self._decoder is None:
                self._decoder = _session(self.files.decoder, self._threads, mem_pattern=True)
            return self._decoder

    def decode_features(self, inputs: DecoderInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._tuned_decoder is None or not self._tuned_features:
            raise ModelArtifactError(f"no tuned decoder with {MASK_FEATURES} in this build: {REBUILD_HINT}")
        with self._decoder_runs:
            logits, iou, features = self._tuned_decoder.run(list(TUNED_OUTPUTS), inputs.feed())
        return logits, iou, features


def _session(path, threads: int, mem_pattern: bool) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.enable_mem_pattern = mem_pattern
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Intra-op spinning stays on (ORT's default): on an otherwise idle 2-core machine turning it off made
    # the encoder 1.56x and the decoder 1.27x slower (p50, interleaved in one process); it only helped when
    # other jobs held the cores (x0.78 / x0.75).
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - ORT raises its own exception types for bad files
        raise ModelArtifactError(f"{path} cannot be loaded by ONNX Runtime ({e}): {REBUILD_HINT}") from None
