"""Actors: the only code that opens nurseries and channels.

Rules every actor follows (see docs/architecture.md):

* It is a class with ``async def run(..., task_status=trio.TASK_STATUS_IGNORED)``, started with
  ``nursery.start`` so the caller knows it is ready before feeding it.
* It owns its channel ends with ``async with``: closing its output is how it tells the next
  actor it is done, so shutdown flows downstream without extra signals.
* Channels are bounded. Where data is kept (the recorder), back-pressure makes loss impossible;
  where data is shown (live views), drop-oldest mailboxes keep it fresh. Every drop is counted,
  and lost sensor samples become explicit ``PowerGap`` records.
* ``statistics()`` returns a frozen dataclass (counts, drops, queue high-water), cheap enough to
  poll from a status display.

Submodules are imported explicitly (``from tinytelem.actors.hub import Hub``) so that loading
one actor never pulls in another's dependencies.
"""
