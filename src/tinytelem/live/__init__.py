"""Live streaming: power ring buffers and summaries, the websocket streamer and its client.

Heavy parts (trio-websocket, numba) are imported where used; importing this package costs
numpy and msgpack only.
"""
