"""Input pipelines: sources (what images exist), the sharded index plan, the DALI graph, loaders."""

from pipeline.data.images import BadImageError
from pipeline.data.loader import Loader, build_loader, load_image_sets
from pipeline.data.sources import DataError, ImageSet

__all__ = ["BadImageError", "DataError", "ImageSet", "Loader", "build_loader", "load_image_sets"]
