"""parse_time: a client's time is in range after conversion to UTC, or INVALID_DATA naming
the field (the packages that take times: tests/test_input_ranges.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from app.client_time import MAX_TIME, MIN_TIME, parse_time
from app.errors import InvalidData

#: Fixed offsets in whole minutes (what ISO 8601 text carries), to the widest Python allows.
#: Python also prints sub-minute offsets (``+00:00:00.000001``) that no client sends and
#: ``fromisoformat`` does not read back exactly.
_OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.datetimes(timezones=_OFFSETS).map(datetime.isoformat)))
def test_parse_time_accepts_only_times_in_range(text: str) -> None:
    try:
        parsed = parse_time(text, "since")
    except InvalidData as exc:
        assert exc.errors and exc.errors[0]["path"] == "since"
        return
    assert parsed.tzinfo is not None and MIN_TIME <= parsed <= MAX_TIME


@settings(max_examples=300, deadline=None)
@given(st.datetimes(timezones=_OFFSETS))
def test_parse_time_of_any_datetime_is_in_range_or_invalid(value: datetime) -> None:
    try:
        parsed = parse_time(value.isoformat(), "until")
    except InvalidData:
        try:
            utc = value.astimezone(UTC)
        except OverflowError:
            return
        assert not (MIN_TIME <= utc <= MAX_TIME)
        return
    assert parsed == value and MIN_TIME <= parsed <= MAX_TIME
