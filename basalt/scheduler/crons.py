"""Cron jobs: ``crons.py`` in the app folder declares functions that run on a
schedule, as Convex's ``crons.ts`` does::

    from basalt import cron_jobs

    crons = cron_jobs()
    crons.interval("clear presence", fn="presence:clear", minutes=5)
    crons.interval("clear presence, Convex style", {"minutes": 5}, "presence:clear")
    crons.hourly("roll up", fn=roll_up, minute_utc=10)
    crons.daily("report", {"hourUTC": 9, "minuteUTC": 30}, report)
    crons.weekly("digest", fn=digest, day_of_week="monday", hour_utc=8)
    crons.monthly("billing", {"day": 1, "hourUTC": 16, "minuteUTC": 0}, bill, {"plan": "pro"})
    crons.cron("every five minutes", "*/5 * * * *", "stats:refresh")

Every helper takes the schedule either as Convex's dict (second argument) or
as keyword arguments in snake case. Times are UTC. ``fn`` is a mutation or an
action (public or internal), as a function or its path; ``args`` an object of
Convex values, checked against the function's ``args=`` when the app loads
(a cron that could never run fails then, not at its first run). Names must be
unique.

An interval cron first runs one interval after it is first deployed, then
every interval. A cron expression has the five standard fields (minute hour
day-of-month month day-of-week), parsed by the ``croniter`` package, which is
imported only when a calendar schedule is used. If the server was down when
runs were due, the cron runs once when it is back and then keeps its rhythm
(missed runs are not replayed one by one).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any, Final

from basalt.errors import ArgumentValidationError, FunctionNotFound, InvalidValue, ValidationError
from basalt.runtime.frames import innermost_app_frame
from basalt.runtime.functions import Function
from basalt.runtime.scheduling import SchedulingError
from basalt.values.model import check_value

FunctionRef = Function | str

WEEKDAYS: Final = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_CALENDAR_FIELDS: Final = {
    "hourly": ("minuteUTC",),
    "daily": ("hourUTC", "minuteUTC"),
    "weekly": ("dayOfWeek", "hourUTC", "minuteUTC"),
    "monthly": ("day", "hourUTC", "minuteUTC"),
}
_RANGES: Final = {"minuteUTC": (0, 59), "hourUTC": (0, 23), "day": (1, 31)}


@dataclass(frozen=True, slots=True)
class CronJob:
    """One declared cron: its unique name, schedule (as stored, e.g.
    ``{"type": "daily", "hourUTC": 9, "minuteUTC": 30}``), function and arguments."""

    name: str
    schedule: dict[str, Any]
    fn: FunctionRef
    args: dict[str, Any]
    #: ``crons.py:5``, where the cron was declared (for error messages)
    declared_at: str = dataclass_field(default="", compare=False)

    def check(self, function: Function) -> None:
        """Check that ``function`` (what :attr:`fn` names) can be the cron's:
        a mutation or an action whose ``args=`` accept :attr:`args`."""
        label = function.path or function.__name__
        if function.kind not in ("mutation", "action"):
            raise SchedulingError(
                f"{self.label}: {label} is a {function.kind}; a cron runs a mutation or an action"
            )
        if function.args is not None:
            try:
                function.args.validate(self.args, error=ArgumentValidationError)
            except ValidationError as exc:
                raise SchedulingError(
                    f"{self.label}: its arguments do not match the args= of {label}: {exc.message}"
                ) from None

    @property
    def label(self) -> str:
        """``cron 'nightly' (…/crons.py:5)``: the cron an error is about."""
        where = f" ({self.declared_at})" if self.declared_at else ""
        return f"cron {self.name!r}{where}"


class CronJobs:
    """The crons an app declares (``crons = cron_jobs()`` in ``crons.py``)."""

    def __init__(self) -> None:
        self.jobs: dict[str, CronJob] = {}

    def __iter__(self) -> Iterator[CronJob]:
        return iter(self.jobs.values())

    def __len__(self) -> int:
        return len(self.jobs)

    def __repr__(self) -> str:
        return f"<CronJobs {sorted(self.jobs)}>"

    def check_functions(self, resolve: Callable[[FunctionRef], Function]) -> None:
        """Check every cron against the function it names (``resolve`` finds
        it in the loaded app, raising FunctionNotFound): called when the app
        loads, so that a cron that could never run fails then, not at its first
        run."""
        for job in self:
            try:
                function = resolve(job.fn)
            except FunctionNotFound as exc:
                hint = f" {exc.detail}" if exc.detail else ""  # told to the developer
                raise SchedulingError(f"{job.label}: {exc.message}{hint}") from None
            job.check(function)

    def interval(
        self,
        name: str,
        schedule: Mapping[str, float] | None = None,
        fn: FunctionRef | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
    ) -> None:
        """Run ``fn`` every ``hours + minutes + seconds`` (``{"minutes": 5}`` in
        Convex's form)."""
        spec = _merge(
            "interval", schedule, {"seconds": seconds, "minutes": minutes, "hours": hours}
        )
        total = 0.0
        for unit, factor in (("seconds", 1), ("minutes", 60), ("hours", 3600)):
            value = spec.pop(unit, 0)
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise SchedulingError(f"cron {name!r}: {unit} must be a number ≥ 0, got {value!r}")
            total += value * factor
        if spec:
            raise SchedulingError(f"cron {name!r}: unknown interval fields {sorted(spec)}")
        if total <= 0:
            raise SchedulingError(
                f"cron {name!r}: the interval must be positive (give seconds, minutes or hours)"
            )
        self._add(name, {"type": "interval", "seconds": total}, fn, args)

    def hourly(
        self,
        name: str,
        schedule: Mapping[str, int] | None = None,
        fn: FunctionRef | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        minute_utc: int | None = None,
    ) -> None:
        """Run ``fn`` every hour at ``minute_utc`` (``{"minuteUTC": m}``)."""
        spec = _merge("hourly", schedule, {"minuteUTC": minute_utc})
        self._calendar(name, "hourly", spec, fn, args)

    def daily(
        self,
        name: str,
        schedule: Mapping[str, int] | None = None,
        fn: FunctionRef | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        hour_utc: int | None = None,
        minute_utc: int | None = None,
    ) -> None:
        """Run ``fn`` every day at ``hour_utc:minute_utc`` (``{"hourUTC": h, "minuteUTC": m}``)."""
        spec = _merge("daily", schedule, {"hourUTC": hour_utc, "minuteUTC": minute_utc})
        self._calendar(name, "daily", spec, fn, args)

    def weekly(
        self,
        name: str,
        schedule: Mapping[str, Any] | None = None,
        fn: FunctionRef | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        day_of_week: str | None = None,
        hour_utc: int | None = None,
        minute_utc: int | None = None,
    ) -> None:
        """Run ``fn`` every week on ``day_of_week`` (``"monday"`` …) at
        ``hour_utc:minute_utc`` (``{"dayOfWeek": d, "hourUTC": h, "minuteUTC": m}``)."""
        fields = {"dayOfWeek": day_of_week, "hourUTC": hour_utc, "minuteUTC": minute_utc}
        spec = _merge("weekly", schedule, fields)
        self._calendar(name, "weekly", spec, fn, args)

    def monthly(
        self,
        name: str,
        schedule: Mapping[str, int] | None = None,
        fn: FunctionRef | None = None,
        args: Mapping[str, Any] | None = None,
        *,
        day: int | None = None,
        hour_utc: int | None = None,
        minute_utc: int | None = None,
    ) -> None:
        """Run ``fn`` every month on ``day`` (1 to 31; months without that day are
        skipped) at ``hour_utc:minute_utc`` (``{"day": d, "hourUTC": h, "minuteUTC": m}``)."""
        fields = {"day": day, "hourUTC": hour_utc, "minuteUTC": minute_utc}
        spec = _merge("monthly", schedule, fields)
        self._calendar(name, "monthly", spec, fn, args)

    def cron(
        self,
        name: str,
        expression: str,
        fn: FunctionRef | None = None,
        args: Mapping[str, Any] | None = None,
    ) -> None:
        """Run ``fn`` on a cron expression (``"*/5 * * * *"``: minute hour
        day-of-month month day-of-week, in UTC)."""
        if not isinstance(expression, str) or len(expression.split()) != 5:
            raise SchedulingError(
                f"cron {name!r}: {expression!r} is not a cron expression of five fields "
                "(minute hour day-of-month month day-of-week)"
            )
        if not _croniter().croniter.is_valid(expression):
            raise SchedulingError(f"cron {name!r}: {expression!r} is not a valid cron expression")
        self._add(name, {"type": "cron", "cronExpr": " ".join(expression.split())}, fn, args)

    # -- internals -------------------------------------------------------------
    def _calendar(
        self,
        name: str,
        kind: str,
        spec: dict[str, Any],
        fn: FunctionRef | None,
        args: Mapping[str, Any] | None,
    ) -> None:
        spec.setdefault("minuteUTC", 0)
        schedule: dict[str, Any] = {"type": kind}
        for field in _CALENDAR_FIELDS[kind]:
            if field not in spec:
                raise SchedulingError(f"cron {name!r}: a {kind} cron needs {field}")
            value = spec.pop(field)
            if field == "dayOfWeek":
                if not isinstance(value, str) or value.lower() not in WEEKDAYS:
                    raise SchedulingError(
                        f"cron {name!r}: dayOfWeek must be one of {', '.join(WEEKDAYS)}, "
                        f"got {value!r}"
                    )
                schedule[field] = value.lower()
            else:
                schedule[field] = _whole(name, field, value, *_RANGES[field])
        if spec:
            raise SchedulingError(f"cron {name!r}: unknown {kind} fields {sorted(spec)}")
        self._add(name, schedule, fn, args)

    def _add(
        self,
        name: str,
        schedule: dict[str, Any],
        fn: FunctionRef | None,
        args: Mapping[str, Any] | None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise SchedulingError(f"a cron job needs a non-empty name, got {name!r}")
        if name in self.jobs:
            raise SchedulingError(f"there is already a cron job named {name!r}")
        if not isinstance(fn, Function | str) or not fn:
            raise SchedulingError(
                f"cron {name!r}: fn must be a mutation or action, or its path, got {fn!r}"
            )
        if args is not None and not isinstance(args, Mapping):
            raise SchedulingError(f"cron {name!r}: args must be a dict, got {args!r}")
        checked = dict(args or {})
        try:
            check_value(checked, what=f"arguments of cron {name!r}")
        except InvalidValue as exc:
            raise SchedulingError(exc.message) from None
        caller = innermost_app_frame(sys._getframe(1))
        job = CronJob(name, schedule, fn, checked, str(caller) if caller is not None else "")
        if isinstance(fn, Function):
            job.check(fn)  # a string path is checked when the app has loaded
        self.jobs[name] = job


def cron_jobs() -> CronJobs:
    """A new, empty set of cron jobs (assign it to ``crons`` in ``crons.py``)."""
    return CronJobs()


def _merge(kind: str, schedule: Mapping[str, Any] | None, fields: dict[str, Any]) -> dict[str, Any]:
    """One schedule from Convex's dict and/or the snake-case keywords."""
    # Keywords left at their default (None; 0 for interval units) were not given.
    given = {
        k: v for k, v in fields.items() if v is not None and not (kind == "interval" and v == 0)
    }
    if schedule is None:
        return given
    if not isinstance(schedule, Mapping):
        raise SchedulingError(f"the {kind} schedule must be a dict, got {schedule!r}")
    if given:
        raise SchedulingError(
            f"give the {kind} schedule either as a dict or as keyword arguments, not both"
        )
    return dict(schedule)


def _whole(name: str, field: str, value: Any, low: int, high: int) -> int:
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int or not low <= value <= high:
        raise SchedulingError(
            f"cron {name!r}: {field} must be a whole number from {low} to {high}, got {value!r}"
        )
    return value


def _croniter() -> Any:
    try:
        return importlib.import_module("croniter")
    except ImportError:  # pragma: no cover - croniter is a dependency
        raise SchedulingError(
            "calendar crons need the croniter package: pip install croniter"
        ) from None


def cron_expression(schedule: Mapping[str, Any]) -> str:
    """The cron expression of a calendar schedule (every type but ``interval``)."""
    kind = schedule["type"]
    if kind == "cron":
        return str(schedule["cronExpr"])
    minute = schedule["minuteUTC"]
    if kind == "hourly":
        return f"{minute} * * * *"
    hour = schedule["hourUTC"]
    if kind == "daily":
        return f"{minute} {hour} * * *"
    if kind == "weekly":
        return f"{minute} {hour} * * {WEEKDAYS.index(schedule['dayOfWeek'])}"
    if kind == "monthly":
        return f"{minute} {hour} {schedule['day']} * *"
    raise SchedulingError(f"unknown cron schedule type {kind!r}")


def first_run_ms(schedule: Mapping[str, Any], now_ms: float) -> float:
    """When a newly deployed cron first runs."""
    if schedule["type"] == "interval":
        return now_ms + float(schedule["seconds"]) * 1000.0
    return _calendar_after(schedule, now_ms)


def next_run_ms(schedule: Mapping[str, Any], due_ms: float, now_ms: float) -> float:
    """The run after the one due at ``due_ms``, when it is fired at ``now_ms``:
    strictly after both (runs missed while the server was down collapse into one)."""
    if schedule["type"] == "interval":
        period = float(schedule["seconds"]) * 1000.0
        steps = max(1, math.floor((now_ms - due_ms) / period) + 1)
        return due_ms + steps * period
    return _calendar_after(schedule, max(due_ms, now_ms))


def _calendar_after(schedule: Mapping[str, Any], after_ms: float) -> float:
    start = datetime.fromtimestamp(after_ms / 1000.0, UTC)
    found = _croniter().croniter(cron_expression(schedule), start).get_next(datetime)
    return float(found.timestamp() * 1000.0)
