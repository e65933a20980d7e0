"""How failed calls reach the server's log: a ConvexError (the app's answer)
in one INFO line without a traceback, other failures in full, and a failure
that repeats held back after 10 a minute and summarised."""

from __future__ import annotations

import logging

import pytest

from basalt.errors import ConvexError, FunctionNotFound
from basalt.runtime.log_limit import OTHER_KINDS, RepeatLimiter, escape_controls, log_repeats
from basalt.runtime.outcome import Failure, report_failure

LOGGER = "basalt.functions"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def limiter(clock: Clock) -> RepeatLimiter:
    return RepeatLimiter(
        lambda r: log_repeats(logging.getLogger(LOGGER), r), burst=10, window_s=60, clock=clock
    )


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize("dev", [False, True])
def test_a_convex_error_is_one_info_line_without_traceback(
    caplog: pytest.LogCaptureFixture, limiter: RepeatLimiter, dev: bool
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    failure = Failure(raised(ConvexError({"code": "EMPTY"})))
    report_failure(failure, "messages:send", dev=dev, limiter=limiter)
    [record] = records(caplog)
    assert record.levelno == logging.INFO
    assert record.exc_info is None
    assert f"[Request ID: {failure.request_id}]" in record.getMessage()
    assert 'Uncaught ConvexError: {"code": "EMPTY"}' in record.getMessage()


def test_other_failures_keep_their_level_and_traceback(
    caplog: pytest.LogCaptureFixture, limiter: RepeatLimiter
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    report_failure(Failure(raised(ValueError("boom"))), "m:f", dev=False, limiter=limiter)
    report_failure(
        Failure(raised(FunctionNotFound("no m:g")), rejected=True), "m:g", dev=True, limiter=limiter
    )
    error, rejected = records(caplog)
    assert error.levelno == logging.ERROR and error.exc_info is not None
    assert error.getMessage().startswith("m:f failed [Request ID: ")
    assert rejected.levelno == logging.WARNING


def test_repeated_failures_are_held_back_and_summarised(
    caplog: pytest.LogCaptureFixture, limiter: RepeatLimiter, clock: Clock
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(25):
        report_failure(Failure(raised(ValueError("boom"))), "m:f", dev=False, limiter=limiter)
        clock.now += 1
    # Another kind (another function, or another error type) has a budget of its own.
    report_failure(Failure(raised(KeyError("k"))), "m:f", dev=False, limiter=limiter)
    report_failure(Failure(raised(ValueError("boom"))), "m:g", dev=False, limiter=limiter)
    logged = records(caplog)
    assert len(logged) == 12
    assert all(r.exc_info is not None for r in logged)

    caplog.clear()
    clock.now += 60  # the window is over: the next failure comes after the summary
    report_failure(Failure(raised(ValueError("boom"))), "m:f", dev=False, limiter=limiter)
    summary, again = records(caplog)
    assert summary.levelno == logging.ERROR and summary.exc_info is None
    assert summary.getMessage() == (
        "… m:f ValueError: 15 more failure(s) like the above in the last 60 s were not "
        "logged one by one"
    )
    assert again.getMessage().startswith("m:f failed [Request ID: ")


def test_a_summary_comes_without_another_failure(
    caplog: pytest.LogCaptureFixture, limiter: RepeatLimiter, clock: Clock
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    for _ in range(11):
        report_failure(Failure(raised(ConvexError("no"))), "m:f", dev=False, limiter=limiter)
    caplog.clear()
    limiter.flush()
    assert records(caplog) == []  # the window has not ended
    clock.now += 60
    limiter.flush()
    [summary] = records(caplog)
    assert summary.levelno == logging.INFO
    assert summary.getMessage().startswith("… m:f ConvexError: 1 more failure(s)")
    limiter.flush()
    assert len(records(caplog)) == 1  # told once


def test_rejected_calls_count_by_error_type_whatever_path_a_client_sends(
    caplog: pytest.LogCaptureFixture, limiter: RepeatLimiter
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    for i in range(50):
        failure = Failure(raised(FunctionNotFound("missing")), rejected=True)
        report_failure(failure, f"made:up{i}", dev=False, limiter=limiter)
    assert len(records(caplog)) == 10


def test_kinds_beyond_the_limit_share_one_budget(clock: Clock) -> None:
    told: list[tuple[str, ...]] = []
    limiter = RepeatLimiter(
        lambda r: told.append(r.kind), burst=1, window_s=60, max_kinds=3, clock=clock
    )
    admitted = [limiter.admit((f"k{i}",), logging.ERROR) for i in range(10)]
    assert admitted == [True, True, True, True] + [False] * 6
    clock.now += 60
    limiter.flush()
    assert told == [OTHER_KINDS]


def test_control_characters_in_failure_records_are_escaped(
    caplog: pytest.LogCaptureFixture, limiter: RepeatLimiter
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    exc = raised(ValueError("bad \x1b[2J\r\x00 input"))
    report_failure(Failure(exc), "m:f", dev=False, limiter=limiter)
    [record] = records(caplog)
    assert "bad \\x1b[2J\\r\\x00 input" in record.getMessage()
    assert escape_controls("tab\tand\nnewline stay") == "tab\tand\nnewline stay"
