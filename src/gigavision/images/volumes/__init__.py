"""3D volumes (CT, MRI): DICOM series and NIfTI files stored as one memory-mapped array, read by blocks for
training and by slices for the viewer. docs/volumes.md has the conventions; ``Volume`` is the read API."""

from gigavision.images.volumes.geometry import PLANES, Grid, Plane, PlaneSize
from gigavision.images.volumes.slices import SliceRef, VolumeSlice, parse_slice_ref
from gigavision.images.volumes.store import CT_WINDOWS, Volume, open_volume

__all__ = [
    "CT_WINDOWS",
    "PLANES",
    "Grid",
    "Plane",
    "PlaneSize",
    "SliceRef",
    "Volume",
    "VolumeSlice",
    "open_volume",
    "parse_slice_ref",
]
