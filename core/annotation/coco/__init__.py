"""COCO instance-segmentation JSON: write lesion masks exactly, read other tools' files defensively.

Conventions (see `/work/shared/notes/evaluation-facts.md`):

- Pixel (row r, col c) covers the square [c, c+1] x [r, r+1] in COCO (x, y) coordinates.
- Masks are bool (H, W) numpy arrays in (row, col); RLE is pycocotools' column-major run length
  encoding, always written compressed (`counts` a str) with `size` [H, W].
- Segmentation rule on export: a mask is written as polygons when it has no holes and its lossless
  pixel-edge polygons rasterise back to exactly the same pixels through pycocotools; otherwise (holes,
  or `force_rle`) as compressed RLE. Either way `annToMask` returns our mask bit for bit.
- `iscrowd` is always 0, also for RLE. `iscrowd=1` means "a crowd region" to COCOeval, which then
  ignores the object when scoring (a lesion with a hole would silently drop out of AP). pycocotools
  picks the decoder from the segmentation's type (list = polygons, dict = RLE), never from `iscrowd`,
  so `annToMask`, `loadRes` and `COCOeval(iouType="segm")` all handle RLE with iscrowd=0.
- `area` is the mask's pixel count, `bbox` is [x, y, w, h] of the mask in pixel edges.
- dermaseg's own data (measurements, editable polygons, provenance) goes under the key "dermaseg" of
  each image / annotation, which COCO readers ignore.

Import validates the whole file before returning anything; every problem is a `CocoError` that names
the entry (e.g. "annotation id 17: ...").
"""

from dermaseg.core.annotation.coco.read import (
    CocoAnnotation,
    CocoCategory,
    CocoDataset,
    CocoImage,
    load_json,
    parse_coco,
    read_coco,
)
from dermaseg.core.annotation.coco.rle import Json, Rle, decode_counts_string
from dermaseg.core.annotation.coco.write import (
    annotation_dict,
    dataset_dict,
    encode_segmentation,
    exact_coco_polygons,
    image_dict,
    mask_has_holes,
    write_json_atomic,
    write_png_mask,
)

__all__ = [
    "CocoAnnotation",
    "CocoCategory",
    "CocoDataset",
    "CocoImage",
    "Json",
    "Rle",
    "annotation_dict",
    "dataset_dict",
    "decode_counts_string",
    "encode_segmentation",
    "exact_coco_polygons",
    "image_dict",
    "load_json",
    "mask_has_holes",
    "parse_coco",
    "read_coco",
    "write_json_atomic",
    "write_png_mask",
]
