"""The decoder graph's own arithmetic against the upstream modules (torch only, no export)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dermaseg.models.litemedsam import PromptDecoder, load_model, upscale_channels_last  # noqa: E402


@pytest.fixture(scope="module")
def torch_model() -> torch.nn.Module:
    torch.set_num_threads(2)
    return load_model()


def test_matmul_upscaling_is_the_upstream_module(torch_model: torch.nn.Module) -> None:
    upscaling = torch_model.mask_decoder.output_upscaling
    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(64 * 64, 256, generator=g) * 3.0
    with torch.no_grad():
        want = upscaling(tokens.T.reshape(1, 256, 64, 64))  # (1, 32, 256, 256)
        got = upscale_channels_last(upscaling, tokens, 64, 64)  # (256 * 256, 32)
    assert got.shape == (256 * 256, 32)
    torch.testing.assert_close(got.T.reshape(1, 32, 256, 256), want, rtol=0, atol=1e-4)
    # a control: the 2 x 2 blocks must land in their own places (a transposed reshuffle is caught)
    swapped = got.reshape(128, 2, 128, 2, 32).transpose(1, 3).reshape(256 * 256, 32)
    assert (swapped.T.reshape(1, 32, 256, 256) - want).abs().max() > 0.1


@pytest.mark.parametrize(("n", "has_mask"), [(1, False), (3, True), (9, True)])
def test_features_graph_matches_the_upstream_decoder(torch_model: torch.nn.Module, n: int, has_mask: bool) -> None:
    """PromptDecoder(features=True) (what the tuned decoder is exported as) gives the upstream answers."""
    g = torch.Generator().manual_seed(n)
    args = (
        torch.randn(1, 256, 64, 64, generator=g),
        torch.rand(1, n, 2, generator=g) * 256.0,
        torch.randint(-1, 2, (1, n), generator=g).float(),
        torch.randn(1, 1, 256, 256, generator=g) * 5.0,
        torch.tensor([1.0 if has_mask else 0.0]),
    )
    with torch.no_grad():
        want_logits, want_iou = PromptDecoder(torch_model).eval()(*args)
        logits, iou, features = PromptDecoder(torch_model, features=True).eval()(*args)
    assert features.shape == (1, 32, 256, 256)
    torch.testing.assert_close(logits, want_logits, rtol=0, atol=1e-3)
    torch.testing.assert_close(iou, want_iou, rtol=0, atol=1e-4)
