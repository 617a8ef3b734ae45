"""The agreement view: how alike the raters' outlines of the open project are, computed on demand.

The figures are core's (`raters.rater_masks` + `raters.measure_raters`, one image's masks in memory at a
time, as `dermaseg project agreement`); here they are only put into words, a plot (one bar per image) and
a table (one row per pair of raters, where they disagree most first). Measures of agreement between
raters, for building a dataset: decision aids, not a diagnosis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from dermaseg.core.annotation.agreement import AGREEMENT_NOTICE, ProjectAgreement, Spread
from dermaseg.core.annotation.project import Progress, Project
from dermaseg.core.annotation.project.raters import RaterMasks, measure_raters, rater_masks

NEEDS_RATERS = "Agreement needs at least two raters on an image"
PLOT_COLUMNS = ("image", "mean Dice", "mean HD95 px")
TABLE_COLUMNS = ("image", "raters", "Dice", "IoU", "HD95 px", "Δ area px²", "Δ diameter px")
MM_COLUMNS = ("HD95 mm", "Δ area mm²", "Δ diameter mm")  # only when a pair's image has a scale
IDLE = (
    "Agreement between raters (annotators named on their annotations, or with `import-coco --annotator`): "
    "press **Compute** to measure it on this project's images with two or more raters."
)


@dataclass(frozen=True)
class AgreementView:
    """What the view shows: `summary` (Markdown), `plot` (one row per image: PLOT_COLUMNS) and `table`
    (one row per pair of raters, most disagreement first: TABLE_COLUMNS, plus MM_COLUMNS when any image is
    calibrated; numbers formatted as text, "–" where undefined)."""

    summary: str
    plot: pd.DataFrame
    table: pd.DataFrame


def compute_agreement(project: Project, progress: Progress | None = None) -> AgreementView:
    """Measure agreement on `project` (one image at a time, `progress` seeing the images go by); a view
    that says so when no image has two raters."""
    gathered = rater_masks(project)
    if not gathered.images:
        return AgreementView(_not_enough(gathered), _frame(PLOT_COLUMNS), _frame(TABLE_COLUMNS))
    result = measure_raters(gathered, progress=progress)
    return AgreementView(summary_markdown(result, gathered), plot_frame(result), table_frame(result))


def empty_view() -> AgreementView:
    """The view before Compute was pressed."""
    return AgreementView(IDLE, _frame(PLOT_COLUMNS), _frame(TABLE_COLUMNS))


def _frame(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns))


def _not_enough(gathered: RaterMasks) -> str:
    one = len(gathered.single_rater)
    return (
        f"**{NEEDS_RATERS}.** No image of this project has annotations by two or more raters"
        f" ({one} image{'s' if one != 1 else ''} annotated by one rater). Each rater types their name in "
        "*Annotator* before saving, or add another rater's annotations with "
        "`dermaseg project import-coco FOLDER FILE --annotator NAME`."
    )


def _spread(s: Spread | None, digits: int, unit: str = "") -> str:
    if s is None:
        return "n/a"
    sd = f", sd {s.sd:.{digits}f}" if s.sd is not None else ""
    return (
        f"{s.mean:.{digits}f}{unit} (median {s.median:.{digits}f}, IQR {s.q1:.{digits}f}–{s.q3:.{digits}f}{sd}, "
        f"range {s.min:.{digits}f}–{s.max:.{digits}f}; n = {s.n})"
    )


def summary_markdown(result: ProjectAgreement, gathered: RaterMasks) -> str:
    """The project's figures: images and pairs measured, raters, mean Dice, IoU and HD95 with spreads."""
    pairs = sum(len(im.pairs) for im in result.images)
    lines = [
        f"**{len(result.images)} image(s) with ≥ 2 raters** ({pairs} pair(s) of raters) · "
        f"raters: {', '.join(gathered.raters)}",
        f"- mean Dice: **{_spread(result.dice, 3)}**",
        f"- mean IoU: {_spread(result.iou, 3)}",
        f"- mean HD95: {_spread(result.hd95_px, 1, ' px')}"
        + (f"; {_spread(result.hd95_mm, 2, ' mm')}" if result.hd95_mm is not None else ""),
    ]
    if gathered.single_rater:
        lines.append(f"- left out: {len(gathered.single_rater)} image(s) with one rater only")
    lines.append(f"\n*{AGREEMENT_NOTICE} Spreads are over images (an image's figure: the mean over its pairs).*")
    return "\n".join(lines)


def plot_frame(result: ProjectAgreement) -> pd.DataFrame:
    """One row per image, lowest mean Dice first: image, mean Dice, mean HD95 px (None where undefined)."""
    rows = [(im.file_name, im.mean_dice, im.mean_hd95_px) for im in result.ranked]
    return pd.DataFrame(rows, columns=list(PLOT_COLUMNS))


def dice_axis_min(plot: pd.DataFrame) -> float:
    """The Dice axis's lower end for `plot_frame`'s bars: a little under the lowest Dice (0 when none), so
    that differences of a few hundredths show."""
    lowest = float(plot["mean Dice"].min()) if len(plot) else 0.0
    return max(0.0, math.floor(lowest * 20) / 20 - 0.05)


def _num(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table_frame(result: ProjectAgreement) -> pd.DataFrame:
    """One row per pair of raters, where they disagree most first (`ProjectAgreement.ranked_pairs`);
    differences are the second rater's minus the first's. mm columns only when an image is calibrated."""
    ranked = result.ranked_pairs()
    with_mm = any(p.mm_per_px is not None for _, p in ranked)
    rows = []
    for name, p in ranked:
        row = [name, f"{p.a} vs {p.b}", _num(p.dice, 3), _num(p.iou, 3), _num(p.hd95_px, 1),
               f"{p.area_diff_px2:+d}", f"{p.diameter_diff_px:+.1f}"]  # fmt: skip
        if with_mm:
            row += [_num(p.hd95_mm, 2), _signed(p.area_diff_mm2, 2), _signed(p.diameter_diff_mm, 2)]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS + (MM_COLUMNS if with_mm else ())))


def _signed(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:+.{digits}f}"
