"""The researchers' loader: PyTorch datasets and transforms over an export. No Django here.

Everything lives in the single module ``annotator_loader`` so that each export can ship it as
one file beside its manifest; this package only re-exports it.
"""
from datasets.loader.annotator_loader import *  # noqa: F401,F403
from datasets.loader.annotator_loader import __all__  # noqa: F401
