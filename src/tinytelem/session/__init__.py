"""One recording session, laid out three ways: ``profile``, ``record`` and ``serve``.

::

    options.py   SessionOptions (what every layout shares) and the three layouts' options
    core.py      run_session(): device -> power source -> trace writer + raw capture ->
                 recorder -> supervisor; prompt tokenizing, session attributes, the summary
    profile.py   one inference into OUT/{trace.h5, summary.json, raw capture}
    record.py    a device until stopped, into one trace file
    serve.py     the same graph with the websocket streamer as an extra actor

The layouts differ only in where the output goes and which actors ride along; everything that
opens a device, builds the actor graph and closes the files is written once, in ``core``.
"""
