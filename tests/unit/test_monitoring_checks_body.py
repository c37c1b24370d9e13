"""An HTTP check's body reader stops at its limit even when the body is compressed, and a
check's error never quotes URL credentials (through a real server:
tests/test_monitoring_checks_body_limit.py)."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest

from app.monitoring.checks import CheckOutcome, _BodyReader, scrub_outcome

MiB = 1024 * 1024


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_body_is_inflated_only_up_to_the_limit(encoding: str) -> None:
    # A server may compress although the check asks for identity: 64 MiB of zeros
    # compress to ~64 KiB; inflating them whole would cost the full 64 MiB.
    packer = zlib.compressobj(wbits=zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
    bomb = packer.compress(bytes(64 * MiB)) + packer.flush()
    assert len(bomb) < MiB
    reader = _BodyReader(MiB, encoding)
    stopped = False
    tracemalloc.start()
    try:
        for start in range(0, len(bomb), 16384):
            if reader.feed(bomb[start : start + 16384]):
                stopped = True
                break
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stopped and reader.truncated and len(reader.body) == MiB
    assert peak < 4 * MiB, f"inflating took {peak / MiB:.0f} MiB at its peak"


def test_check_errors_never_quote_url_credentials() -> None:
    url = "https://alice:p%40ss-word@example.com/x"
    outcome = CheckOutcome(
        False, None, None, "could not connect to alice:p%40ss-word@example.com (p@ss-word)"
    )
    scrubbed = scrub_outcome(outcome, url).error
    assert scrubbed is not None and "p@ss" not in scrubbed and "p%40ss" not in scrubbed
    assert "alice" not in scrubbed and "***@example.com" in scrubbed
