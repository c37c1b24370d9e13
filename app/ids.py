"""Object ids on the wire: their bound and their JSON Schemas.

A foundation module (no imports of ours) so that the router, the storage layer
and domain validation share one bound without importing each other.
"""

from __future__ import annotations

from typing import Any

#: Ids are 32-bit serials in the database; a larger number is invalid data, not a query error.
MAX_ID = 2**31 - 1
#: Schema of an object id (monitor, incident, channel, user, ...).
ID: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
#: Schema of a row version (optimistic concurrency); 32-bit like ids.
VERSION: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
