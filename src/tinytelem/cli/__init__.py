"""Command-line interface: one module per verb group, loaded only when that verb runs."""
