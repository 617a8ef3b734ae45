"""Lesion outlines as editable polygons: the types (`polygons`), exact mask <-> polygon conversion
(`tracing`) and the validation and repair of a user's edit (`repair`)."""

from dermaseg.core.annotation.geometry.polygons import (
    Point,
    Polygon,
    Polygons,
    Ring,
    polygons_area_px,
    polygons_bbox,
    polygons_svg_path,
    signed_area,
)
from dermaseg.core.annotation.geometry.repair import MAX_SIDE_PX, RepairResult, repair_polygon, repair_polygons
from dermaseg.core.annotation.geometry.tracing import mask_to_polygons, polygons_to_mask

__all__ = [
    "MAX_SIDE_PX",
    "Point",
    "Polygon",
    "Polygons",
    "RepairResult",
    "Ring",
    "mask_to_polygons",
    "polygons_area_px",
    "polygons_bbox",
    "polygons_svg_path",
    "polygons_to_mask",
    "repair_polygon",
    "repair_polygons",
    "signed_area",
]
