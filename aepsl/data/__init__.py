"""Datasets: item sources, the scene generator, the VOC-format reader, transforms."""
