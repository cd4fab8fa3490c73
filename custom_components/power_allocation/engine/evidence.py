"""What the decider believes of mains: a reading is evidence, not truth (I9).

One message saying "on battery" may be a forged MQTT publish, a glitching status bit or a
bridge's stale retained value. Mains is believed off only once on-battery has been read for
`CONFIRM_READINGS` cycles in a row, or at once when two UPS units say so together (a second,
independent signal). Until then the belief stays what it was, and the controller keeps its
course: on mains nothing is lost by the wait, a UPS carries the load through it, which is what it
is for. Mains back is believed at once: it starts no stop (what it starts waits for mains to stay
`restore_delay_s`), and a cycle more on battery would stop services on mains for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from .controller import Fault, Readings

# Two readings in a row, as the issue of forged single messages asks; a real outage is seen one
# cycle later than its first reading.
CONFIRM_READINGS = 2
# Units saying the same at once are independent evidence (each UPS has its own mains input).
AGREEING_UNITS = 2


@dataclass(frozen=True, slots=True)
class MainsBelief:
    """The believed mains state and the run of raw readings behind a possible change of it."""

    believed: bool | None = None
    last_read: bool | None = None
    run: int = 0  # readings in a row of `last_read`

    def observe(self, readings: Readings) -> tuple[MainsBelief, Fault | None]:
        """The belief after this cycle's readings, and a fault when a change waits for proof."""
        read = readings.mains_on
        if read is None:
            # Unknown says nothing either way: the run of readings is not broken by a gap.
            return self, None
        run = self.run + 1 if read == self.last_read else 1
        if read == self.believed:
            return MainsBelief(self.believed, read, run), None
        on_battery_units = sum(1 for u in readings.ups.values() if u.on_battery is True)
        if read or run >= CONFIRM_READINGS or on_battery_units >= AGREEING_UNITS:
            return MainsBelief(read, read, run), None
        return MainsBelief(self.believed, read, run), Fault(
            None,
            "reading_unconfirmed",
            "one reading says on battery: waiting for a second before acting on it",
        )
