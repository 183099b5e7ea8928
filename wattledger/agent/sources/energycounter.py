"""An accelerator's hardware energy counter, kept cumulative across a 32-bit wrap.

AMD SMI and HLML hand the counter over as a 64-bit integer, but what the firmware counts
underneath is not always 64 bits wide: AMD's MI200 and MI300 accumulate in 64 bits, older
boards (and other firmware) in 32. A 32-bit counter of 15.3 µJ steps wraps every 65.7 kJ
(under four minutes at 300 W); one of mJ every 4.29 MJ (two hours at 600 W). So the width is
learned from the values: a counter that has been seen above 2**32 is 64 bits wide, and a
drop in it is a reset (a driver reload or a GPU reset), passed on as read so the collector
counts it as a reset; while it has stayed under 2**32, a drop of more than half that range
is a wrap and is unfolded (``WrapUnfolder``).
"""

from __future__ import annotations

from wattledger.agent.sources.polling import WrapUnfolder

NARROW_BITS = 32


class EnergyCounter:
    """``counter(raw)`` -> the raw count made cumulative, in the counter's own units."""

    def __init__(self) -> None:
        self._narrow = WrapUnfolder(NARROW_BITS)
        self._wide = False

    def __call__(self, raw: int) -> int:
        if raw >= 1 << NARROW_BITS:
            self._wide = True  # seen past 32 bits: a 64-bit counter, which never wraps
        if self._wide:
            return raw
        return int(self._narrow(float(raw)))
