"""Annotation data: masks <-> polygons, lesion measurements, COCO files, and the project that stores them."""
