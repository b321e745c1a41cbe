"""tinytelem: profile quantized tiny LLMs on edge devices.

Heavy dependencies (numba, h5py, onnx) are imported lazily by the modules that need them, so
``import tinytelem`` and ``tinytelem --help`` stay cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
