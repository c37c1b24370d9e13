"""Control messages (app/control.py): one encoding, its decoder, and publishing over a real broker."""

from __future__ import annotations

import asyncio

import pytest

from app import control, metrics
from app.broker.redis import RedisBroker
from app.control import MemberRoleChanged, RevokeMembership, RevokeSession, RevokeToken
from app.events import CONTROL_TOPIC
from app.protocol import encode_event

MESSAGES: list[control.ControlMessage] = [
    RevokeToken(7),
    RevokeSession("42"),
    RevokeSession("0b6e9f1c-keycloak-sid"),
    RevokeMembership(3, 9),
    MemberRoleChanged(3, 9, "viewer"),
]


def frame(data: object) -> str:
    """A control-topic frame as the broker builds it."""
    return encode_event(CONTROL_TOPIC, 0, 1, data)


@pytest.mark.parametrize("message", MESSAGES, ids=repr)
def test_every_message_survives_the_broker_frame(message: control.ControlMessage) -> None:
    assert control.decode(frame(control.encode(message))) == message


# Frames exactly as the previous release's EventBus.control wrote them: instances of both
# releases share one control topic during a rolling upgrade.
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "revoke_token", "token_id": 7}, RevokeToken(7)),
        ({"kind": "revoke_session", "session_id": 42}, RevokeSession("42")),
        ({"kind": "revoke_session", "session_id": "sid-1"}, RevokeSession("sid-1")),
        ({"kind": "revoke_membership", "user_id": 3, "tenant_id": 9}, RevokeMembership(3, 9)),
        (
            {"kind": "member_role", "user_id": 3, "tenant_id": 9, "role": "editor"},
            MemberRoleChanged(3, 9, "editor"),
        ),
    ],
)
def test_frames_of_the_previous_release_decode(
    data: dict[str, object], message: control.ControlMessage
) -> None:
    assert control.decode(frame(data)) == message
    # And what this release sends is what the previous release reads.
    expected = dict(data)
    if isinstance(expected.get("session_id"), int):
        expected["session_id"] = str(expected["session_id"])
    assert control.encode(message) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"pkg_id": 0}',
        frame(None),
        frame(["revoke_token", 7]),
        frame({"kind": "something_newer", "token_id": 7}),
        frame({"token_id": 7}),
        frame({"kind": "revoke_token"}),
        frame({"kind": "revoke_token", "token_id": "7"}),
        frame({"kind": "revoke_token", "token_id": True}),
        frame({"kind": "revoke_session", "session_id": ""}),
        frame({"kind": "revoke_session", "session_id": None}),
        frame({"kind": "revoke_session", "session_id": 1.5}),
        frame({"kind": "revoke_membership", "user_id": 3}),
        frame({"kind": "revoke_membership", "user_id": 3, "tenant_id": None}),
        frame({"kind": "member_role", "user_id": 3, "tenant_id": 9}),
        frame({"kind": "member_role", "user_id": 3, "tenant_id": 9, "role": 2}),
    ],
)
def test_anything_else_decodes_to_none(raw: str) -> None:
    assert control.decode(raw) is None


async def test_publish_reaches_every_instance_through_redis(redis_url: str, redis_prefix: str) -> None:
    sender = RedisBroker(redis_url, prefix=redis_prefix)
    receiver = RedisBroker(redis_url, prefix=redis_prefix)
    await sender.start()
    await receiver.start()
    got: dict[str, list[control.ControlMessage | None]] = {"sender": [], "receiver": []}
    try:
        for name, broker in (("sender", sender), ("receiver", receiver)):
            broker.add_listener(
                CONTROL_TOPIC, lambda _t, _s, f, name=name: got[name].append(control.decode(f))
            )
            await broker.wait_subscribed(CONTROL_TOPIC)
        for message in MESSAGES:
            assert await control.publish(sender, message) is True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while min(map(len, got.values())) < len(MESSAGES):
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        # Every instance, the sender included (its hub acts on its own messages), sees each one in order.
        assert got == {"sender": MESSAGES, "receiver": MESSAGES}
    finally:
        await sender.close()
        await receiver.close()


async def test_publish_with_the_broker_down_reports_and_counts(redis_prefix: str) -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0", prefix=redis_prefix, socket_timeout=1.0)
    await broker.start()
    before = metrics.BROKER_ERRORS._value.get()
    try:
        assert await control.publish(broker, RevokeToken(7)) is False
    finally:
        await broker.close()
    assert metrics.BROKER_ERRORS._value.get() == before + 1
