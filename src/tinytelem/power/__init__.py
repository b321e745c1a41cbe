"""Power: where every figure of current, voltage and energy comes from before it is recorded.

::

    source.py      PowerSource: the one protocol every sensor actor implements
    waveform.py    what a device draws over time (constant, or segments from the twin)
    simulated.py   the simulated sensor: samples a waveform with its own drifting clock
    twin.py        the twin's power channel, both ends, and TwinSensor (the sensor wired to it)
    summaries.py   multi-level power summaries (1 ms ... 1 s) for the trace and live clients

Hardware sensors (PPK2, INA bridge, Joulescope, Linux sources) live in ``sensors/`` and
implement the same :class:`~tinytelem.power.source.PowerSource`.
"""
