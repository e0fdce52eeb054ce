"""Built-in readers; importing this package registers them (see ``images.registry``)."""

from gigavision.images.readers import dicom, pil, slide, tiff, vips

__all__ = ["dicom", "pil", "slide", "tiff", "vips"]
