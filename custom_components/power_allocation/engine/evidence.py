"""What the decider believes of mains and of services' draws: a reading is evidence, not truth
(I9).

One message saying "on battery" may be a forged MQTT publish, a glitching status bit or a
bridge's stale retained value. Mains is believed off only once on-battery has been read for
`CONFIRM_READINGS` cycles in a row, or at once when two UPS units say so together (a second,
independent signal). Until then the belief stays what it was, and the controller keeps its
course: on mains nothing is lost by the wait, a UPS carries the load through it, which is what it
is for. Mains back is believed at once: it starts no stop (what it starts waits for mains to stay
`restore_delay_s`), and a cycle more on battery would stop services on mains for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
    run_since_s: float | None = None  # when the first of them was read

    def observe(self, readings: Readings) -> tuple[MainsBelief, Fault | None]:
        """The belief after this cycle's readings, and a fault when a change waits for proof."""
        read = readings.mains_on
        if read is None:
            # Unknown says nothing either way: the run of readings is not broken by a gap.
            return self, None
        same = read == self.last_read
        run = self.run + 1 if same else 1
        since_s = self.run_since_s if same else readings.now_s
        if read == self.believed:
            return MainsBelief(self.believed, read, run, since_s), None
        on_battery_units = sum(1 for u in readings.ups.values() if u.on_battery is True)
        if read or run >= CONFIRM_READINGS or on_battery_units >= AGREEING_UNITS:
            return MainsBelief(read, read, run, since_s), None
        return MainsBelief(self.believed, read, run, since_s), Fault(
            None,
            "reading_unconfirmed",
            "one reading says on battery: waiting for a second before acting on it",
        )


# A service's draw more than this many times its last believed draw, and by this much, is a jump
# a forged or garbled reading makes as easily as a real load: believed on its second reading.
JUMP_RATIO = 3.0
JUMP_MIN_W = 50.0


@dataclass(frozen=True, slots=True)
class DrawBelief:
    """Each service's believed draw, and the services whose last reading jumped (held back)."""

    believed_w: Mapping[str, float] = field(default_factory=dict)
    jumped: frozenset[str] = frozenset()

    def observe(
        self, draws_w: Mapping[str, float | None], steady: frozenset[str]
    ) -> tuple[DrawBelief, dict[str, float | None], tuple[Fault, ...]]:
        """The belief after this cycle's draws, the draws to decide on, and what was held back.

        A `steady` service's draw (running, not starting: a start is meant to jump) that jumps
        far above the last believed one is held back (the last one stands) until a second
        reading in a row bears it out: one message saying a 35-W switch draws 1,900 W must not
        spend the battery's reserve on it (I9).
        """
        believed = dict(self.believed_w)
        jumped: set[str] = set()
        decided: dict[str, float | None] = {}
        faults: list[Fault] = []
        for sid, draw_w in draws_w.items():
            last_w = believed.get(sid)
            if draw_w is None or last_w is None:
                decided[sid] = draw_w
                if draw_w is not None:
                    believed[sid] = draw_w
                continue
            jumps = draw_w > JUMP_RATIO * last_w + JUMP_MIN_W
            if jumps and sid in steady and sid not in self.jumped:
                jumped.add(sid)
                decided[sid] = last_w
                faults.append(
                    Fault(
                        sid,
                        "reading_implausible",
                        f"{sid}: one reading says {draw_w:.0f} W after {last_w:.0f} W: "
                        "waiting for a second before acting on it",
                    )
                )
                continue
            decided[sid] = believed[sid] = draw_w
        return DrawBelief(believed, frozenset(jumped)), decided, tuple(faults)
