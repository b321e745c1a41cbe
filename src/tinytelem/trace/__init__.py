"""Trace files: HDF5 traces (schema in docs/trace-format.md) and zstd raw link captures."""
