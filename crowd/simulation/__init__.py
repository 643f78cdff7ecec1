"""A simulated crowd: procedural scenes with exact ground truth, simulated workers, and quality metrics.

Pure Python (NumPy, Pillow, shapely): nothing here touches Django, so the pipeline driver and the
benchmarks can use it alike.
"""
