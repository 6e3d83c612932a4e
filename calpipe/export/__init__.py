"""Export of L1 stores to the formats of other single-dish tools (issue 15).

``calpipe export L1.zarr OUT --format sdfits``: :func:`calpipe.export.sdfits.export_sdfits`.
"""

from __future__ import annotations

FORMATS = ("sdfits",)
