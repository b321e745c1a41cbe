"""Wire protocol v1: sans-I/O frame codec and typed messages (see docs/protocol.md).

Import from the submodules: ``tinytelem.protocol.messages`` (message classes and enums, which
live in ``enums`` and are re-exported), ``tinytelem.protocol.codec`` (framing, decoder, tick
unwrapping) and ``tinytelem.protocol.cobs`` (byte stuffing).
"""
