"""Power sensors: real hardware drivers, their emulators, Linux power sources, calibration.

Every sensor is a :class:`tinytelem.power.source.PowerSource`; :func:`tinytelem.sensors.open.
open_sensor` builds the one a ``--sensor`` spec names (the table of specs is in that module).
Modules import their heavy dependencies (numba, pyjoulescope_driver) only when used.
"""
