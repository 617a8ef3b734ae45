"""The project: a folder of images and one database of their annotations."""
