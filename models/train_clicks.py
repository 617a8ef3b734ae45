"""Fine-tune LiteMedSAM's prompt decoder for clicks; the image encoder stays frozen.

The bundled weights were trained with boxes only (a lone click gives Jaccard ~0). This recipe teaches
the prompt decoder SAM's interactive loop on the dev images, on the CPU, in one command
(`dermaseg models train-clicks DATASET`):

- Samples: each image under 4 flips (none, horizontal, vertical, both), with `dihedral` also its
  transpose's 4 flips (the 8 symmetries of the square). Embeddings come from the
  shipped ONNX encoder through the runtime's own cache (computed once); truth masks are resized into
  the decoder's 256x256 frame.
- A step takes `batch` samples and one prompt kind: a first click (the RITM ideal point or a random
  interior point) or a jittered box. Then up to `max_rounds - 1` corrective clicks, simulated on the
  model's own prediction by the evaluation's click simulator (jittered), each round fed the previous
  round's logits as mask input (as SAM trains). The last `grad_rounds` rounds are trained (the earlier
  ones only simulate, without gradients, so long click sequences stay cheap). Loss on head 0 within
  the image: BCE + Dice, plus the MSE of the predicted IoU.
- Trained: every parameter of the mask decoder and the prompt encoder (its Fourier features are a
  fixed buffer); AdamW, cosine schedule.

Output: `<out>.npz` with float16 deltas from the bundled weights (state-dict name -> array) and
`<out>.json` with the recipe. Deterministic for a given machine, seed and thread count.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from dermaseg.core.errors import DermasegError
from dermaseg.core.evaluation.click_simulator import jitter_click, next_click
from dermaseg.core.evaluation.dataset import DatasetCase, box_from_mask
from dermaseg.core.evaluation.protocols import jittered_box
from dermaseg.core.image import LesionImage, load_image
from dermaseg.core.interactive.edits import local_edits
from dermaseg.core.interactive.refine import EDIT_BEYOND, EDIT_REACH
from dermaseg.core.interactive.tidy import tidy_mask
from dermaseg.core.segment.preprocess import LOW_RES_SIZE, MASK_FEATURES, Transform
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import BOX_CORNER_LABELS, PAD_LABEL, Engine, MaskResult
from dermaseg.models.litemedsam import PromptDecoder, load_model

FLIPS = ((False, False), (True, False), (False, True), (True, True))  # (horizontal, vertical)
CV_PROTOCOLS = ("box", "clicks", "box-clicks")


@dataclass(frozen=True)
class TrainConfig:
    """The recipe. steps x batch samples; rounds: prompts per sample (first prompt + corrections)."""

    steps: int = 500
    batch: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.01
    max_rounds: int = 10
    grad_rounds: int = 2
    box_share: float = 0.25
    ideal_first_share: float = 0.5
    click_jitter: float = 2.0  # px in the 256 frame
    box_jitter: float = 0.15  # max fraction of the box side
    seed: int = 0
    threads: int = 2
    # 8 symmetries instead of 4 flips; 2-fold CV: NoC@90 4.14 vs 4.40 but mIoU@1 0.850 vs 0.858: not kept
    dihedral: bool = False
    # corrections click the errors of the mask the user is shown (edited, tidied), not the raw one;
    # 2-fold CV: NoC@90 3.69 vs 3.77, mIoU@1 0.851 vs 0.862, loose box 0.936 vs 0.919: not kept
    click_shown: bool = False


@dataclass(frozen=True)
class Sample:
    """One (image, flip): embedding float32 (1, 256, 64, 64); truth bool (256, 256) in the decoder frame
    (image resized to fit, padded bottom/right); valid bool (256, 256): the image's extent there."""

    case_id: str
    name: str
    embedding: np.ndarray
    truth: np.ndarray
    valid: np.ndarray


def frame_mask(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) at image resolution -> bool (256, 256) in the decoder's frame (bilinear, > 0.5)."""
    h, w = Transform(*mask.shape).resized
    small = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR)
    out = np.zeros((LOW_RES_SIZE, LOW_RES_SIZE), bool)
    out[:h, :w] = np.asarray(small) > 127
    return out


def prepare(engine: Engine, cases: Sequence[DatasetCase], dihedral: bool = False) -> list[Sample]:
    """Every case under every flip (with `dihedral`, also every flip of its transpose), with its
    embedding (from the engine's cache, else the encoder)."""
    samples = []
    for case in tqdm(cases, desc="embeddings", unit="image"):
        rgb, gt = load_image(case.image).rgb, case.load_mask()
        for transposed in (False, True) if dihedral else (False,):
            rgb_t, gt_t = (rgb.transpose(1, 0, 2), gt.T) if transposed else (rgb, gt)
            valid = frame_mask(np.ones_like(gt_t))  # flips keep the shape
            for fh, fv in FLIPS:
                r, m = rgb_t, gt_t
                if fh:
                    r, m = r[:, ::-1], m[:, ::-1]
                if fv:
                    r, m = r[::-1], m[::-1]
                name = f"{case.id}{'-t' if transposed else ''}{'-h' if fh else ''}{'-v' if fv else ''}"
                emb, _ = engine.embedding(LesionImage.from_array(np.ascontiguousarray(r), name))
                samples.append(Sample(case.id, name, emb, frame_mask(np.ascontiguousarray(m)), valid))
    return samples


def decode_batch(
    decoder: PromptDecoder, emb: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_in: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched decoder: emb (B, 256, 64, 64), coords (B, N, 2), labels (B, N), mask_in (B, 1, 256, 256)
    logits or None -> low-res logits (B, 4, 256, 256), iou predictions (B, 4). Same graph as the export."""
    pe = decoder.prompt_encoder
    sparse = decoder._embed_points(coords, labels)
    if mask_in is None:
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(emb.shape[0], -1, *emb.shape[-2:])
    else:
        dense = pe.mask_downscaling(mask_in)
    return decoder._predict_masks(emb, sparse, dense)


def _first_prompt(
    sample: Sample, kind: str, rng: np.random.Generator, cfg: TrainConfig
) -> tuple[list[list[float]], list[float]]:
    """A box (corners, labels 2/3) or a first click (+ SAM's padding point), in decoder-frame pixels."""
    gt = sample.truth
    if kind == "box":
        box = jittered_box(box_from_mask(gt, 2.0), LOW_RES_SIZE, LOW_RES_SIZE, rng, rng.uniform(0, cfg.box_jitter))
        return [[box[0], box[1]], [box[2], box[3]]], list(BOX_CORNER_LABELS)
    if rng.random() < cfg.ideal_first_share:
        click = next_click(gt, np.zeros_like(gt))
        x, y = click.xy
    else:  # anywhere inside, favouring the interior
        depth = ndimage.distance_transform_edt(gt).ravel()
        i = int(rng.choice(depth.size, p=depth / depth.sum()))
        x, y = i % LOW_RES_SIZE + 0.5, i // LOW_RES_SIZE + 0.5
    return [[x, y], [0.0, 0.0]], [1.0, PAD_LABEL]


def shown_mask(raw: np.ndarray, logits: np.ndarray, coords: list[list[float]], labels: list[float]) -> np.ndarray:
    """What the product shows for the decoder's answer `raw` / `logits` (256, 256) to decoder-frame
    prompts (`_first_prompt` plus corrections): the mask edited to honour every click, then tidied."""
    points = tuple((x, y) for (x, y), v in zip(coords, labels, strict=True) if v in (0.0, 1.0))
    corners = [xy for xy, v in zip(coords, labels, strict=True) if v in BOX_CORNER_LABELS]
    box = (corners[0][0], corners[0][1], corners[1][0], corners[1][1]) if corners else None
    prompts = Prompts(box, points, tuple(int(v) for v in labels if v in (0.0, 1.0)))
    result = MaskResult(logits, 0.0, 0, (0.0,), prompts, "training", "", raw.shape).with_mask(raw)
    return tidy_mask(local_edits(result, prompts, EDIT_REACH, EDIT_BEYOND), prompts)


def _loss(low: torch.Tensor, iou_pred: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    logit = low[:, 0]
    bce = (F.binary_cross_entropy_with_logits(logit, truth, reduction="none") * valid).sum() / valid.sum()
    prob = torch.sigmoid(logit) * valid
    dice = 1 - (2 * (prob * truth).sum((1, 2)) + 1) / (prob.sum((1, 2)) + truth.sum((1, 2)) + 1)
    pred = ((logit > 0).float() * valid).detach()
    inter, union = (pred * truth).sum((1, 2)), ((pred + truth) > 0).float().sum((1, 2))
    iou_true = inter / union.clamp(min=1)
    return bce + dice.mean() + F.mse_loss(iou_pred[:, 0], iou_true)


def train(samples: Sequence[Sample], cfg: TrainConfig, log: bool = True) -> dict[str, torch.Tensor]:
    """Fine-tune on `samples`; returns the trained decoder's state dict (PromptDecoder names)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    decoder = PromptDecoder(load_model())
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / cfg.steps)))
    decoder.train()
    start, history = time.perf_counter(), []
    bar = tqdm(range(cfg.steps), desc="train clicks", unit="step", disable=not log)
    for _ in bar:
        batch = [samples[i] for i in rng.choice(len(samples), size=cfg.batch, replace=False)]
        kind = "box" if rng.random() < cfg.box_share else "click"
        rounds = int(rng.integers(1, cfg.max_rounds + 1))
        emb = torch.from_numpy(np.concatenate([s.embedding for s in batch]))
        truth = torch.from_numpy(np.stack([s.truth for s in batch]).astype(np.float32))
        valid = torch.from_numpy(np.stack([s.valid for s in batch]).astype(np.float32))
        prompts = [_first_prompt(s, kind, rng, cfg) for s in batch]
        clicked = [np.zeros_like(s.truth) for s in batch]
        mask_in, total = None, torch.zeros(())
        trained_from = max(0, rounds - cfg.grad_rounds)
        for r in range(rounds):
            coords = torch.tensor([p[0] for p in prompts], dtype=torch.float32)
            labels = torch.tensor([p[1] for p in prompts], dtype=torch.float32)
            with torch.set_grad_enabled(r >= trained_from):
                low, iou_pred = decode_batch(decoder, emb, coords, labels, mask_in)
            if r >= trained_from:
                total = total + _loss(low, iou_pred, truth, valid)
            if r == rounds - 1:
                break
            pred = (low[:, 0] > 0).detach().numpy() & np.stack([s.valid for s in batch])
            if cfg.click_shown:
                pred = np.stack(
                    [shown_mask(pred[b], low[b, 0].detach().numpy(), *prompts[b]) for b in range(len(batch))]
                )
            for b, s in enumerate(batch):
                click = next_click(s.truth, pred[b], clicked[b]) or next_click(s.truth, np.zeros_like(pred[b]))
                clicked[b][click.y, click.x] = True
                click = jitter_click(click, s.truth, pred[b], cfg.click_jitter, rng)
                # clicks go before the box corners / padding point, as `decoder_points` orders them
                n = sum(1 for v in prompts[b][1] if v in (0.0, 1.0))
                prompts[b][0].insert(n, list(click.xy))
                prompts[b][1].insert(n, 1.0 if click.positive else 0.0)
            mask_in = low[:, :1].detach()
        loss = total / (rounds - trained_from)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(history[-20:]):.3f}")
    if log:
        seconds, loss = time.perf_counter() - start, np.mean(history[-20:])
        print(f"trained {cfg.steps} steps in {seconds:.0f} s, mean loss of the last 20 steps {loss:.3f}")
    return {k: v.detach().clone() for k, v in decoder.state_dict().items()}


def cross_validate(
    engine: Engine, cases: Sequence[DatasetCase], cfg: TrainConfig, folds: int, out: Path, reuse: bool = False
) -> dict:
    """k-fold estimate of what the recipe gives on images it never saw. Row i of the dataset is in fold
    i % k; each fold's decoder is trained on the other folds, exported to ONNX (with `fold.json`: the
    recipe and the held-out ids) and evaluated on its fold by the product's own code (`dermaseg
    evaluate`'s report, method auto: the fold's decoder, tidied) under `out/fold<k>/<protocol>/`.
    `reuse`: evaluate the fold decoders an earlier run left in `out` instead of training them again (to
    score a change of inference in minutes); their recipe is reported, and their folds must match.
    Returns the out-of-fold summaries by protocol and method (also written to `out/summary.json`, with
    a plot of the click protocols)."""
    from dermaseg.core.evaluation.protocols import Scores, summarise_clicks, summarise_scores
    from dermaseg.core.evaluation.report import EvalConfig, plot_curves, run
    from dermaseg.core.segment.artifacts import file_sha256
    from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
    from dermaseg.models.export_onnx import export_decoder

    samples = [] if reuse else prepare(engine, cases, cfg.dihedral)
    rows: dict[str, list[dict]] = {p: [] for p in CV_PROTOCOLS}
    for k in range(folds):
        held_out = [c for i, c in enumerate(cases) if i % folds == k]
        ids = [c.id for c in held_out]
        onnx_path, record = out / f"fold{k}" / "decoder-tuned-fp32.onnx", out / f"fold{k}" / "fold.json"
        if reuse:
            cfg = _reusable_fold(onnx_path, record, ids)
        else:
            decoder = PromptDecoder(load_model(), features=True)  # exported with its features (`click_fit`)
            held_out_ids = set(ids)
            decoder.load_state_dict(train([s for s in samples if s.case_id not in held_out_ids], cfg))
            onnx_path.parent.mkdir(parents=True, exist_ok=True)
            export_decoder(decoder.eval(), onnx_path)
            record.write_text(json.dumps({"config": asdict(cfg), "held_out": ids}, indent=1) + "\n")
        files = replace(engine.backend.files, tuned_decoder=onnx_path, tuned_decoder_sha256=file_sha256(onnx_path))
        fold_engine = Engine(OnnxBackend(files), engine.cache)
        for protocol in CV_PROTOCOLS:
            report = run(fold_engine, held_out, EvalConfig(protocol), out / f"fold{k}" / protocol)
            rows[protocol] += report.rows
    summary: dict[str, dict] = {}
    for protocol, protocol_rows in rows.items():
        for method in dict.fromkeys(str(r["method"]) for r in protocol_rows):
            mine = [r for r in protocol_rows if r["method"] == method]
            if protocol == "box":
                scores = [Scores(r["dice"], r["jaccard"], r["thresholded_jaccard"]) for r in mine]
                summary[f"box/{method}"] = summarise_scores(scores)
            else:
                curves = [[float(v) for v in str(r["ious"]).split()] for r in mine]
                summary[protocol] = summarise_clicks(curves, len(curves[0]))
    (out / "summary.json").write_text(json.dumps({"config": asdict(cfg), "folds": folds, **summary}, indent=1) + "\n")
    curves_by = {p: summary[p]["mIoU_curve"] for p in CV_PROTOCOLS if p in summary}
    plot_curves(curves_by, out / "miou_vs_clicks.png", "tuned decoder (tidied), out of fold")
    return summary


def _reusable_fold(onnx_path: Path, record: Path, held_out: list[str]) -> TrainConfig:
    """The recipe of a fold decoder saved by an earlier cross-validation; DermasegError unless it was
    trained without exactly these held-out images."""
    if not onnx_path.is_file() or not record.is_file():
        raise DermasegError(f"nothing to reuse: {onnx_path.parent} has no decoder and fold.json of a cross-validation")
    saved = json.loads(record.read_text())
    if saved["held_out"] != held_out:
        raise DermasegError(f"{record} held out other images: same dataset and --folds as the run that saved it?")
    if MASK_FEATURES not in {o.name for o in onnx.load(str(onnx_path)).graph.output}:
        raise DermasegError(f"{onnx_path} predates the decoder's {MASK_FEATURES} output: train the folds again")
    return TrainConfig(**saved["config"])


def save_deltas(state: dict[str, torch.Tensor], path: Path, cfg: TrainConfig, images: Sequence[str]) -> None:
    """`path` (.npz): float16 (trained - bundled) per changed tensor; `path`.json: the recipe."""
    base = PromptDecoder(load_model()).state_dict()
    deltas = {k: (v - base[k]).numpy().astype(np.float16) for k, v in state.items() if not torch.equal(v, base[k])}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **deltas)
    recipe = {"config": asdict(cfg), "images": list(images), "tensors": len(deltas), "torch": torch.__version__}
    path.with_suffix(".json").write_text(json.dumps(recipe, indent=1) + "\n")


def load_deltas(decoder: PromptDecoder, path: Path) -> PromptDecoder:
    """Apply the deltas of `save_deltas` to a PromptDecoder built from the bundled weights."""
    state = decoder.state_dict()
    with np.load(path, allow_pickle=False) as npz:
        for k in npz.files:
            state[k] = state[k] + torch.from_numpy(npz[k].astype(np.float32))
    decoder.load_state_dict(state)
    return decoder.eval()
