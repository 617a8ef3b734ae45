"""Interactive segmentation: what a box or a click on the page becomes, from prompts to one tidy lesion mask."""
