"""Schemathesis hooks of the test suite's OpenAPI checks (loaded through SCHEMATHESIS_HOOKS).

`POST /orders` answers 422 to an Idempotency-Key already used for another order, as the IETF
Idempotency-Key draft says: that answer depends on the requests before, not on the request itself.
Schemathesis draws keys from a small space and reuses them across different orders, so its
positive-data check would count that 422 against a schema-valid request. Each valid key it draws
for a positive case gets a suffix unique to the run: a key then names one order, and every other
422 still counts. (Key reuse itself is covered by the Rust tests.)

The read side's `GET /reports/daily?from=&to=` refuses (400) a `from` after `to` and a range over
366 days: relations between two parameters, which a schema cannot state. For a positive case with
well-formed dates (or none), the hook orders the two days and shortens the range to 366 days, so
that every other 400 still counts. (The refusals themselves are covered by the Rust tests.)
"""

import itertools
import sys
import re
from datetime import date, datetime, timedelta, timezone

import schemathesis

HEADER = "Idempotency-Key"
VALID_KEY = re.compile(r"[!-~]{1,200}")
_suffixes = itertools.count()


@schemathesis.hook
def map_case(context, case):
    key = (case.headers or {}).get(HEADER)
    meta = case.meta
    positive = meta is None or meta.generation.mode.is_positive
    if positive and isinstance(key, str) and VALID_KEY.fullmatch(key):
        case.headers[HEADER] = f"{key}.{next(_suffixes)}"
    if positive and case.path == REPORT:
        _within_report_range(case)
    return case


REPORT = "/reports/daily"
REPORT_MAX_DAYS = 366
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _within_report_range(case):
    query = case.query if case.query is not None else {}
    days = {}
    for name in ("from", "to"):
        value = query.get(name)
        if value is None:
            continue
        if not (isinstance(value, str) and DAY.fullmatch(value)):
            return  # not a date: the 400 must stay
        try:
            days[name] = date.fromisoformat(value)
        except ValueError:
            return
    try:
        end = days.get("to", datetime.now(timezone.utc).date())
        start = days.get("from", end - timedelta(days=29))
        start, end = min(start, end), max(start, end)
        if (end - start).days >= REPORT_MAX_DAYS:
            start = end - timedelta(days=REPORT_MAX_DAYS - 1)
    except OverflowError:
        return
    query["from"], query["to"] = start.isoformat(), end.isoformat()
    case.query = query


# CPython before 3.11.8 and 3.12.1 (gh-106905) may raise a spurious SystemError ("AST constructor
# recursion depth mismatch") from ast.parse deep in a call stack; Hypothesis calls it only to
# describe a filter's lambda for its repr. Describe such a lambda as unknown instead of failing the
# run on a bug of the interpreter.
if sys.version_info < (3, 11, 8) or (3, 12) <= sys.version_info < (3, 12, 1):
    from hypothesis.internal import lambda_sources

    _describe = lambda_sources._lambda_description

    def _describe_or_unknown(*args, **kwargs):
        try:
            return _describe(*args, **kwargs)
        except SystemError:
            return "lambda: <unknown>"

    lambda_sources._lambda_description = _describe_or_unknown
