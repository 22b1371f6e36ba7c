"""What a plug-in of a decision reads: the one declaration a driver plans its shortcuts by.

A router, admission, a decision log or a simulator extension says, in one :class:`Reads`,
which parts of the serving system its answers depend on. A driver may then skip keeping
what nobody reads -- the simulator shows engine load as unknown when no one reads it,
moves token counts on between engine events only when someone does, builds a finished
request's outcome only when someone learns from it, and routes a whole trace before serving
it when every answer is oblivious (:mod:`sincere.sim.plan`). The live gateway keeps
everything; the declarations only ever allow a driver to do less work for the same answers.

The defaults are the safe side: a plug-in that declares nothing is taken to read
everything, so forgetting a declaration costs speed, never correctness.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reads:
    """Which parts of the serving system a plug-in's answers depend on."""

    # engine-reported load in the views (running, waiting, KV usage, busy time); not
    # the driver's own outstanding counts, which every view carries
    load: bool = True
    # token counts (queued, remaining, cached) exact at the moment of the decision,
    # between engine events too
    tokens: bool = True
    # finished requests' outcomes (it learns from them, or records them)
    outcomes: bool = True
    # its answers depend only on the candidates' ids and order, the requests asked about
    # so far and its own generator -- never on loads, outstanding counts or outcomes
    oblivious: bool = False

    def __or__(self, other: Reads) -> Reads:
        """What two plug-ins deciding together read: either's reads; oblivious if both are."""
        return Reads(
            load=self.load or other.load,
            tokens=self.tokens or other.tokens,
            outcomes=self.outcomes or other.outcomes,
            oblivious=self.oblivious and other.oblivious,
        )


READS_NOTHING = Reads(load=False, tokens=False, outcomes=False, oblivious=True)
"""The declaration of a plug-in that reads nothing (the identity of ``|``)."""
