"""Model readers, tokenizers, reference inference and per-op cost accounting.

Submodules are imported on demand (``from tinytelem.models.llama2c import load_checkpoint``)
so that importing the package costs nothing beyond numpy for whoever uses it.
"""

from __future__ import annotations
