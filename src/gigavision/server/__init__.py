"""HTTP server: REST API, IIIF/Deep Zoom tiles and the web viewer (FastAPI)."""
