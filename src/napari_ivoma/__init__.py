"""napari-ivoma: interactive video object mask annotation for napari."""

__version__ = "0.1.0"
