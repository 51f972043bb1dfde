"""Constants of the training-set export format, shared by the exporter (collab.dataset) and the researcher tool
(collab.researcher) without importing either's dependencies."""
from __future__ import annotations

FORMAT = "crystal-qc-training-export"
FORMAT_VERSION = 1
ROOT = "crystal-qc-export"
MANIFEST = "manifest.json"
DATA_YAML = "data.yaml"
#: Everything is held in memory; an export larger than this is refused (choose fewer analyses).
MAX_EXPORT_BYTES = 1024 ** 3
