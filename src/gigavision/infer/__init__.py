"""Big-image inference: tiled prediction in bounded memory, cross-tile merging, stitched masks, zoom-in."""
