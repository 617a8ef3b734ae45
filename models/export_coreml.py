"""Export LiteMedSAM to CoreML ML programs (fp16 weights and compute, fp32 inputs and outputs).

Three packages, and a fourth given a fine-tuned model, with the same input/output names as the ONNX
graphs (`export_onnx`):

- `encoder-fp16.mlpackage`: image (1, 3, 256, 256) -> image_embeddings (1, 256, 64, 64).
- `decoder-box-fp16.mlpackage`: the prompt decoder with exactly N = 2 points (the box corners).
- `decoder-points-fp16.mlpackage`: the prompt decoder with N in 1..16 points (a CoreML RangeDim).
- `decoder-tuned-fp16.mlpackage`: the decoder fine-tuned for clicks, N in 1..66 (a box and 64 clicks).

The resize of the logits to the original image size stays outside the graph (as in ONNX).
On Linux a package can be converted and its spec inspected, but not run (`predict` needs macOS).
"""

from __future__ import annotations

import platform
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dermaseg.core.segment.backends.coreml_packages import (
    ENCODER_INPUT,
    ENCODER_OUTPUT,
    MAX_POINTS,
    PACKAGE_NAMES,
    TUNED_MAX_POINTS,
    io_specs,
    ml_program,
    package_digest,
)
from dermaseg.core.segment.preprocess import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_SIZE, LOW_RES_SIZE, TUNED_OUTPUTS
from dermaseg.models.litemedsam import PromptDecoder, predict_masks_batch1

BOX_POINTS = 2  # the box model's fixed N: two corners labelled 2 and 3
# coremltools stamps the conversion day into the spec; dropped so that a rebuild gives the same digest.
_VOLATILE_METADATA = ("com.github.apple.coremltools.conversion_date",)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class CoreMLSettings:
    """Conversion settings, recorded in the build manifest."""

    convert_to: str = "mlprogram"
    minimum_deployment_target: str = "macOS13"  # same spec version (7) as iOS16
    compute_precision: str = "float16"
    io_dtype: str = "float32"
    frontend: str = "torch.jit.trace"
    box_points: int = BOX_POINTS
    min_points: int = 1
    max_points: int = MAX_POINTS
    tuned_max_points: int = TUNED_MAX_POINTS
    default_points: int = BOX_POINTS


class Batch1PromptDecoder(PromptDecoder):
    """`PromptDecoder` whose mask prediction is `predict_masks_batch1`: same inputs and outputs."""

    def _predict_masks(
        self, image_embeddings: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        masks, iou, features = predict_masks_batch1(self.mask_decoder, image_embeddings, self.image_pe, sparse, dense)
        return (masks, iou, features) if self.features else (masks, iou)


def decoder_example_inputs(num_points: int = BOX_POINTS) -> tuple[torch.Tensor, ...]:
    """Trace inputs: zero embedding, `num_points` points (a box when 2), no mask input."""
    coords = torch.linspace(10.0, 200.0, num_points * 2).reshape(1, num_points, 2)
    labels = torch.tensor([[2.0, 3.0]]) if num_points == 2 else torch.ones(1, num_points)
    return (
        torch.zeros(1, 256, 64, 64),
        coords,
        labels,
        torch.zeros(1, 1, LOW_RES_SIZE, LOW_RES_SIZE),
        torch.zeros(1),
    )


def _check_numpy() -> None:
    major, minor = (int(p) for p in np.__version__.split(".")[:2])
    if (major, minor) >= (2, 4):
        raise RuntimeError(
            f"numpy {np.__version__} breaks coremltools conversion; install numpy<2.4 (pyproject 'export')"
        )


def _convert(traced: torch.jit.ScriptModule, inputs: list, outputs: list[str]) -> Any:
    """coremltools conversion of a traced module: ML program, macOS 13, fp16 compute, fp32 I/O.

    The traces skip torch's own `check_trace` (two more forward passes and a graph comparison, half
    the encoder's conversion time); the converted packages are checked against torch instead.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mlmodel = ml_program(traced, inputs, outputs)
    for key in _VOLATILE_METADATA:
        if key in mlmodel.user_defined_metadata:
            del mlmodel.user_defined_metadata[key]
    return mlmodel


def convert_encoder(model: nn.Module) -> Any:
    """LiteMedSAM's image encoder as a `coremltools.models.MLModel` (fp16, fp32 I/O)."""
    import coremltools as ct

    x = torch.zeros(1, 3, ENCODER_SIZE, ENCODER_SIZE)
    with torch.no_grad():
        traced = torch.jit.trace(model.image_encoder.eval(), (x,), check_trace=False)  # see _convert
    inputs = [ct.TensorType(name=ENCODER_INPUT, shape=tuple(x.shape), dtype=np.float32)]
    return _convert(traced, inputs, [ENCODER_OUTPUT])


def convert_decoder(model: nn.Module, min_points: int, max_points: int, features: bool = False) -> Any:
    """The prompt decoder with N in [min_points, max_points] (one fixed N when they are equal); with
    `features`, also its mask features output (`PromptDecoder`)."""
    import coremltools as ct

    default = BOX_POINTS if min_points <= BOX_POINTS <= max_points else min_points
    n: int | Any = default if min_points == max_points else ct.RangeDim(min_points, max_points, default)
    with torch.no_grad():
        module = Batch1PromptDecoder(model, features=features).eval()
        traced = torch.jit.trace(module, decoder_example_inputs(default), check_trace=False)
    shapes = {
        "image_embeddings": (1, 256, 64, 64),
        "point_coords": (1, n, 2),
        "point_labels": (1, n),
        "mask_input": (1, 1, LOW_RES_SIZE, LOW_RES_SIZE),
        "has_mask_input": (1,),
    }
    inputs = [ct.TensorType(name=k, shape=ct.Shape(shapes[k]), dtype=np.float32) for k in DECODER_INPUTS]
    return _convert(traced, inputs, list(TUNED_OUTPUTS if features else DECODER_OUTPUTS))


def _operations(spec: Any) -> Iterator[Any]:
    """Every MIL operation of an mlprogram spec, nested blocks included."""
    functions = spec.mlProgram.functions.values()
    stack = [block for function in functions for block in function.block_specializations.values()]
    while stack:
        for op in stack.pop().operations:
            yield op
            stack.extend(op.blocks)


def op_counts(spec: Any) -> dict[str, int]:
    """MIL operation types -> count over the `main` function, nested blocks included."""
    return dict(sorted(Counter(op.type for op in _operations(spec)).items()))


def weight_dtypes(spec: Any) -> dict[str, int]:
    """Data type name -> number of `const` tensors stored in the weight file (not inlined)."""
    from coremltools.proto import MIL_pb2

    counts: Counter[str] = Counter()
    for op in _operations(spec):
        if op.type == "const" and "val" in op.attributes:
            val = op.attributes["val"]
            if val.WhichOneof("value") == "blobFileValue":
                counts[MIL_pb2.DataType.Name(val.type.tensorType.dataType)] += 1
    return dict(sorted(counts.items()))


def package_size(path: Path) -> int:
    """Total bytes of the files in a package directory."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def canonicalise_spec(package: Path) -> None:
    """Rewrite a package's model.mlmodel with deterministic protobuf serialisation (sorted map entries).

    coremltools serialises protobuf maps (op attributes, metadata) in arbitrary order, so two conversions
    of the same model differ in bytes though not in content; after this they are byte-identical.
    """
    from coremltools.libmodelpackage import ModelPackage
    from coremltools.proto import Model_pb2

    spec_file = Path(ModelPackage(str(package)).getRootModel().path())
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    spec_file.write_bytes(spec.SerializeToString(deterministic=True))


def save_package(mlmodel: Any, path: Path) -> None:
    """Save an ML program to `path` (an .mlpackage dir) atomically, with canonical spec bytes."""
    import shutil

    tmp = path.with_name(f".partial-{path.name}")  # coremltools insists on the .mlpackage suffix
    shutil.rmtree(tmp, ignore_errors=True)
    mlmodel.save(str(tmp))
    canonicalise_spec(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _describe(path: Path, spec: Any, seconds: float) -> dict[str, Any]:
    return {
        "file": path.name,
        "size_bytes": package_size(path),
        "sha256": package_digest(path),
        "specification_version": int(spec.specificationVersion),
        **io_specs(spec),
        "op_counts": op_counts(spec),
        "weight_dtypes": weight_dtypes(spec),
        "convert_seconds": round(seconds, 2),
    }


def export_coreml(
    model: nn.Module, out_dir: Path, progress: Progress | None = None, tuned: nn.Module | None = None
) -> dict[str, Any]:
    """Write the `.mlpackage`s into `out_dir` (the tuned decoder's too when `tuned`, LiteMedSAM with the
    fine-tuned decoder, is given); return their description for the build manifest.

    Returns {"coremltools": version, "torch": version, "numpy": version, "settings": CoreMLSettings as
    dict, "packages": {"encoder"|"decoder_box"|"decoder_points"[|"decoder_tuned"]: {file, size_bytes,
    sha256 (package digest, see `package_digest`), inputs, outputs, op_counts, weight_dtypes,
    convert_seconds}}}.
    """
    import coremltools as ct

    _check_numpy()
    say = progress or (lambda _msg: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = CoreMLSettings()
    jobs: dict[str, Callable[[], Any]] = {
        "encoder": lambda: convert_encoder(model),
        "decoder_box": lambda: convert_decoder(model, BOX_POINTS, BOX_POINTS),
        "decoder_points": lambda: convert_decoder(model, settings.min_points, settings.max_points),
    }
    if tuned is not None:
        max_points = settings.tuned_max_points
        jobs["decoder_tuned"] = lambda: convert_decoder(tuned, settings.min_points, max_points, features=True)
    packages: dict[str, Any] = {}
    for role, job in jobs.items():
        path = out_dir / PACKAGE_NAMES[role]
        say(f"CoreML: converting {path.name}")
        start = time.perf_counter()
        mlmodel = job()
        save_package(mlmodel, path)
        packages[role] = _describe(path, mlmodel.get_spec(), time.perf_counter() - start)
        say(f"CoreML: wrote {path.name} ({packages[role]['size_bytes'] / 1e6:.1f} MB)")
    return {
        "coremltools": ct.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.system(),
        "settings": asdict(settings),
        "packages": packages,
    }
