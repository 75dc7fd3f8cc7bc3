"""Format readers: each turns a file (or a part of one) into a :class:`~cvx_core.data.columns.RawTable`
or Arrow batches for :func:`cvx_core.data.parse.parse_posts`."""

from cvx_core.data.formats.base import FORMATS, DecodedSizeError, Source, detect_format

__all__ = ["FORMATS", "DecodedSizeError", "Source", "detect_format"]
