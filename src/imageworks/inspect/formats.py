"""Weight-file formats by name: re-exported from `imageworks.formats`, the one format vocabulary."""

from __future__ import annotations

from imageworks.formats import FILE_FORMATS, WEIGHT_FORMATS, classify_weight_file

__all__ = ["FILE_FORMATS", "WEIGHT_FORMATS", "classify_weight_file"]
