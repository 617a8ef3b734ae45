"""Export LiteMedSAM to ONNX (encoder and prompt decoder) and derive the fp16 and int8 files."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from dermaseg.core.segment.preprocess import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_SIZE, TUNED_OUTPUTS
from dermaseg.models.litemedsam import PromptDecoder

OPSET = 17


def export_encoder(model: nn.Module, path: Path) -> None:
    """image (1, 3, 256, 256) float32 -> image_embeddings (1, 256, 64, 64)."""
    x = torch.zeros(1, 3, ENCODER_SIZE, ENCODER_SIZE)
    _export(model.image_encoder, (x,), path, ["image"], ["image_embeddings"], None)


def export_decoder(decoder: PromptDecoder, path: Path) -> None:
    """See `PromptDecoder` (with its `features`, a third output); the number of points N is dynamic."""
    args = (
        torch.zeros(1, 256, 64, 64),
        torch.tensor([[[10.0, 10.0], [100.0, 100.0]]]),
        torch.tensor([[2.0, 3.0]]),
        torch.zeros(1, 1, 256, 256),
        torch.zeros(1),
    )
    _export(
        decoder,
        args,
        path,
        list(DECODER_INPUTS),
        list(TUNED_OUTPUTS if decoder.features else DECODER_OUTPUTS),
        {"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
    )


def _export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic_axes: dict | None,
) -> None:
    # The TorchScript exporter (dynamo=False) gives a 15-20 % faster encoder than the dynamo one here
    # (model notes: 335 vs 401 ms); it is deprecated in torch 2.13, hence the silenced warning.
    tmp = path.with_suffix(".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(tmp))
    tmp.replace(path)


def convert_fp16(src: Path, dst: Path) -> None:
    """Weights and compute in fp16, float32 inputs and outputs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    tmp = dst.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(dst)


# The decoder's matrix products over the image's 4,096 tokens (the two-way transformer's attention
# projections), by the torch module names the exporter gives their MatMul nodes: 10 of ~50 MatMul / Gemm,
# ~60 % of a run. The products over the few prompt tokens, the hypernetworks and the output upscaling stay
# float: out of fold (2-fold cross-validation, docs/speed.md) quantising the upscaling too cost 0.09-0.12
# NoC@90, these ten alone nothing.
IMAGE_TOKEN_PRODUCTS = (
    "cross_attn_token_to_image/k_proj/",
    "cross_attn_token_to_image/v_proj/",
    "cross_attn_image_to_token/q_proj/",
    "cross_attn_image_to_token/out_proj/",
    "final_attn_token_to_image/k_proj/",
    "final_attn_token_to_image/v_proj/",
)


def quantize_int8(src: Path, dst: Path) -> None:
    """ONNX Runtime's dynamic quantisation of the decoder's matrix products over the image's tokens
    (`IMAGE_TOKEN_PRODUCTS`): their weights in int8 (one scale per output channel), their activations
    quantised to uint8 at each run; everything else, inputs and outputs float32.

    For the tuned decoder on this 2-core Zen 4 (AVX-512 VNNI): ~21 ms against 29-37 ms per run (every
    MatMul / Gemm quantised: ~17 ms, but 0.09 NoC@90 worse out of fold). The encoder is not quantised this way
    (min box IoU 0.67-0.96 on real images when tried; see `build.VARIANTS`).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    names = [n.name for n in onnx.load(str(src)).graph.node if n.op_type == "MatMul"]
    chosen = [n for n in names if any(p in n for p in IMAGE_TOKEN_PRODUCTS)]
    if len(chosen) != 10:  # 2 layers x 4 + the final attention's 2: the graph is not the one measured
        raise ValueError(f"{src}: expected the decoder's 10 image-token MatMul nodes, found {len(chosen)}")
    tmp = dst.with_suffix(".tmp.onnx")
    quantize_dynamic(
        src,
        tmp,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_quantize=chosen,
        extra_options={"MatMulConstBOnly": True},
    )
    tmp.replace(dst)
