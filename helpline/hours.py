"""Opening hours: is the line open at an instant, when does it next open, and how to say the hours.

All arithmetic is done on the local wall clock of the configured zone (Europe/London), so the hours
mean the same thing to a caller in March, in July and across the night the clocks change.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from .config import DAYS, OpeningHoursSettings, parse_span

_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class OpeningHours:
    """The weekly timetable and closed dates, ready for questions about instants."""

    zone: zoneinfo.ZoneInfo
    weekly: tuple[tuple[tuple[int, int], ...], ...]  # per weekday, Monday first: (start, end) minutes
    closed: frozenset[dt.date]

    @classmethod
    def from_settings(cls, settings: OpeningHoursSettings) -> "OpeningHours":
        """Build from validated configuration."""
        zone = zoneinfo.ZoneInfo(settings.timezone)
        if settings.always_open:
            return cls(zone, tuple(((0, 24 * 60),) for _day in DAYS), frozenset())
        weekly = tuple(
            tuple(sorted(parse_span(span) for span in settings.weekly.get(day, []))) for day in DAYS
        )
        return cls(zone, weekly, frozenset(settings.closed_dates))

    def local(self, instant: dt.datetime) -> dt.datetime:
        """The wall-clock time at the helpline for an aware instant."""
        if instant.tzinfo is None:
            raise ValueError("instants must carry a time zone")
        return instant.astimezone(self.zone)

    def say_when(self, instant: dt.datetime, now: dt.datetime) -> str:
        """An instant as words, at the helpline's wall clock and counted from `now`'s day: "today at
        8 a.m.", "tomorrow at 8:30 a.m.", "on Monday 28 December at 8 a.m."."""
        moment, today = self.local(instant), self.local(now).date()
        clock = moment.strftime("%-I:%M %p").replace(":00", "").replace("AM", "a.m.").replace("PM", "p.m.")
        if moment.date() == today:
            return f"today at {clock}"
        if moment.date() == today + dt.timedelta(days=1):
            return f"tomorrow at {clock}"
        return f"on {moment.strftime('%A')} {moment.day} {moment.strftime('%B')} at {clock}"

    def is_open(self, instant: dt.datetime) -> bool:
        """Whether callers are answered at this instant."""
        local = self.local(instant)
        if local.date() in self.closed:
            return False
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.weekly[local.weekday()])

    def next_opening(self, instant: dt.datetime) -> dt.datetime | None:
        """The next instant (aware, in the helpline's zone) at which the line opens; None if it never does."""
        local = self.local(instant)
        for offset in range(0, 400):
            day = local.date() + dt.timedelta(days=offset)
            if day in self.closed:
                continue
            for start, _end in self.weekly[day.weekday()]:
                opening = dt.datetime.combine(day, dt.time(0), self.zone) + dt.timedelta(minutes=start)
                # Adding minutes to midnight is wall-clock arithmetic; normalise through UTC so an
                # opening time that falls in the hour the clocks skip lands on a real instant.
                opening = opening.astimezone(dt.timezone.utc).astimezone(self.zone)
                if opening > local:
                    return opening
        return None

    def spoken_summary(self) -> str:
        """The hours as a sentence for the IVR, grouping days that share the same hours."""
        groups: list[tuple[list[int], tuple[tuple[int, int], ...]]] = []
        for index, spans in enumerate(self.weekly):
            if groups and groups[-1][1] == spans and groups[-1][0][-1] == index - 1:
                groups[-1][0].append(index)
            else:
                groups.append(([index], spans))
        if all(spans == ((0, 24 * 60),) for spans in self.weekly) and not self.closed:
            return "We are open at any hour, every day."
        parts = []
        for days, spans in groups:
            if not spans:
                continue
            name = _DAY_NAMES[days[0]] if len(days) == 1 else f"{_DAY_NAMES[days[0]]} to {_DAY_NAMES[days[-1]]}"
            times = " and ".join(f"{_clock(start)} to {_clock(end)}" for start, end in spans)
            parts.append(f"{name}, {times}")
        if not parts:
            return "The line is not open at present."
        closed = ", and closed on public holidays" if self.closed else ""
        sentence = "We are open " + "; ".join(parts) + closed
        # "8 p.m." already ends the sentence: no second full stop.
        return sentence if sentence.endswith(".") else sentence + "."


def _clock(minutes: int) -> str:
    """Say a time of day the way people do: "8 a.m.", "2:30 p.m.", "midnight"."""
    if minutes in (0, 24 * 60):
        return "midnight"
    hour, minute = divmod(minutes, 60)
    if hour == 12 and minute == 0:
        return "noon"
    suffix = "a.m." if hour < 12 else "p.m."
    hour12 = hour % 12 or 12
    return f"{hour12} {suffix}" if minute == 0 else f"{hour12}:{minute:02d} {suffix}"
