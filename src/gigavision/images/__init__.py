"""Open any image as a leveled source; pyramids, thumbnails, foreground masks."""

from gigavision.images.registry import list_readers, open_image, register_reader
from gigavision.images.source import ImageInfo, ImageSource, Level

__all__ = ["ImageInfo", "ImageSource", "Level", "list_readers", "open_image", "register_reader"]
