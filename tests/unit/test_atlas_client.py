"""AtlasClient against the loopback Atlas fake: auth, lookups, PATCH semantics, retries."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ai_employee.clients.atlas import AtlasClient, AtlasLookupError, jwt_expiry, patch_body_from
from ai_employee.clients.retry import RetryPolicy, ServiceAuthError, ServiceRejected, ServiceUnavailable
from tests.fakes.atlas_server import AtlasFake

FAST = RetryPolicy(attempts=4, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
EMAIL = "admin@example.com"
PASSWORD = "s3cret-pass"


class Clock:
    """A clock the test moves: token expiry without waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def fake() -> AsyncIterator[AtlasFake]:
    server = AtlasFake(email=EMAIL, password=PASSWORD)
    await server.start()
    yield server
    await server.stop()


async def make_client(fake: AtlasFake, **kwargs: Any) -> AtlasClient:
    options: dict[str, Any] = {"retry": FAST, "timeout_seconds": 5.0}
    options.update(kwargs)
    return AtlasClient(fake.base_url, EMAIL, PASSWORD, **options)


async def create(client: AtlasClient, title: str = "Pump 3 leaking", **extra: Any) -> dict[str, Any]:
    return await client.create_work_order({"title": title, **extra})


async def test_token_is_signed_in_once_and_reused(fake: AtlasFake) -> None:
    client = await make_client(fake)
    await create(client)
    await create(client, "second")
    await client.get_work_order(max(fake.work_orders))
    assert fake.signins == 1
    assert len(fake.requests_to("POST", "/auth/signin")) == 1
    await client.aclose()


async def test_refused_token_signs_in_again_once_and_the_request_succeeds(fake: AtlasFake) -> None:
    client = await make_client(fake)
    first = await create(client)
    fake.rotate_secret()  # Atlas restarted with a new secret: our JWT is now "Expired or invalid"
    again = await client.get_work_order(int(first["id"]))
    assert again["id"] == first["id"]
    assert fake.signins == 2
    await client.aclose()


async def test_a_token_refused_twice_fails_without_signing_in_a_third_time(fake: AtlasFake) -> None:
    client = await make_client(fake)
    fake.inject(
        "GET", "/work-orders/.*", status=403, body={"success": False, "message": "Forbidden"}, times=5
    )
    with pytest.raises(ServiceAuthError, match="Forbidden"):
        await client.get_work_order(1)
    assert fake.signins == 2
    await client.aclose()


async def test_wrong_password_is_an_auth_error_naming_the_settings(fake: AtlasFake) -> None:
    client = AtlasClient(fake.base_url, EMAIL, "wrong", retry=FAST)
    with pytest.raises(ServiceAuthError, match=r"Invalid credentials.*ATLAS_PASSWORD"):
        await create(client)
    assert len(fake.requests_to("POST", "/auth/signin")) == 1  # a 403 is not retried
    await client.aclose()


async def test_legacy_signin_shape_expiry_comes_from_the_jwt_exp(fake: AtlasFake) -> None:
    clock = Clock()
    client = await make_client(fake, clock=clock)
    await create(client)
    token = fake.requests_to("POST", "/work-orders")[0].headers["Authorization"].split()[1]
    exp = jwt_expiry(token)
    assert exp is not None and exp > clock.now + 13 * 24 * 3600
    clock.now = exp + 1  # past the JWT's own expiry: sign in before sending
    await create(client, "after expiry")
    assert fake.signins == 2
    assert not fake.requests_to("POST", "/auth/refresh")
    await client.aclose()


async def test_refresh_signin_shape_uses_the_refresh_token_when_expired() -> None:
    fake = AtlasFake(email=EMAIL, password=PASSWORD, signin_shape="refresh", token_seconds=1800)
    await fake.start()
    clock = Clock()
    client = await make_client(fake, clock=clock)
    await create(client)
    clock.now += 1800  # expiresAt reached
    await create(client, "after refresh")
    assert (fake.signins, fake.refreshes) == (1, 1)
    await client.aclose()
    await fake.stop()


async def test_refused_refresh_token_falls_back_to_signing_in() -> None:
    fake = AtlasFake(email=EMAIL, password=PASSWORD, signin_shape="refresh", token_seconds=1800)
    await fake.start()
    clock = Clock()
    client = await make_client(fake, clock=clock)
    await create(client)
    fake.refresh_tokens.clear()  # revoked server-side
    clock.now += 1800
    await create(client, "after revoked refresh")
    assert (fake.signins, fake.refreshes) == (2, 0)
    await client.aclose()
    await fake.stop()


async def test_asset_location_and_assignee_resolve_to_ids(fake: AtlasFake) -> None:
    line = fake.add_location("Line 2")
    pump = fake.add_asset("Pump 3", location_id=line["id"])
    fake.add_asset("Pump 30")  # a `cn` match that is not the asset asked for
    tech = fake.add_user("Tech@Example.com")
    client = await make_client(fake)
    assert await client.asset_id("pump 3") == pump["id"]
    assert await client.location_id("Line 2") == line["id"]
    assert await client.user_id("tech@example.com") == tech["id"]
    await client.aclose()


async def test_unknown_asset_names_near_matches(fake: AtlasFake) -> None:
    fake.add_asset("Pump 30")
    client = await make_client(fake)
    with pytest.raises(AtlasLookupError, match=r"no Atlas asset has name 'Pump 3'; similar: 'Pump 30'"):
        await client.asset_id("Pump 3")
    await client.aclose()


async def test_ambiguous_asset_name_is_refused(fake: AtlasFake) -> None:
    fake.add_asset("Compressor")
    fake.add_asset("compressor")
    client = await make_client(fake)
    with pytest.raises(AtlasLookupError, match="2 Atlas assets"):
        await client.asset_id("Compressor")
    await client.aclose()


async def test_update_keeps_every_field_it_does_not_change(fake: AtlasFake) -> None:
    pump = fake.add_asset("Pump 3")
    tech = fake.add_user("tech@example.com")
    client = await make_client(fake)
    created = await create(
        client,
        description="leaks at the seal",
        priority="HIGH",
        dueDate="2026-12-01T12:00:00.000Z",
        asset={"id": pump["id"]},
        assignedTo=[{"id": tech["id"]}],
    )
    updated = await client.update_work_order(int(created["id"]), {"title": "Pump 3 leaking badly"})
    assert updated["title"] == "Pump 3 leaking badly"
    assert updated["priority"] == "HIGH"
    assert updated["description"] == "leaks at the seal"
    assert updated["dueDate"] == "2026-12-01T12:00:00.000+00:00"
    assert updated["asset"]["id"] == pump["id"]
    assert [user["id"] for user in updated["assignedTo"]] == [tech["id"]]
    await client.aclose()


async def test_raw_patch_resets_omitted_fields_like_atlas(fake: AtlasFake) -> None:
    client = await make_client(fake)
    created = await create(client, priority="HIGH", description="keep me")
    patched = await client.patch_work_order(int(created["id"]), {"title": "renamed"})
    assert (patched["priority"], patched["description"]) == ("NONE", None)
    await client.aclose()


def test_patch_body_carries_relations_as_ids() -> None:
    body = patch_body_from(
        {
            "title": "t",
            "priority": "LOW",
            "asset": {"id": 4, "name": "Pump"},
            "assignedTo": [{"id": 7}],
            "team": None,
        }
    )
    assert body["asset"] == {"id": 4}
    assert body["assignedTo"] == [{"id": 7}]
    assert body["team"] is None
    assert body["customers"] == []


async def test_change_status_complete_sets_completion(fake: AtlasFake) -> None:
    client = await make_client(fake)
    created = await create(client)
    done = await client.change_status(int(created["id"]), "COMPLETE", feedback="seal replaced")
    assert done["status"] == "COMPLETE"
    assert done["completedBy"]["id"] == fake.admin["id"]
    assert done["completedOn"]
    await client.aclose()


async def test_search_returns_a_spring_page(fake: AtlasFake) -> None:
    client = await make_client(fake)
    for number in range(3):
        await create(client, f"wo {number}")
    page = await client.search_work_orders(
        {"filterFields": [], "pageNum": 0, "pageSize": 2, "sortField": "id", "direction": "DESC"}
    )
    assert (page["totalElements"], page["totalPages"], page["numberOfElements"]) == (3, 2, 2)
    assert page["content"][0]["customId"] == "WO000003"
    await client.aclose()


async def test_work_orders_get_sequential_custom_ids(fake: AtlasFake) -> None:
    client = await make_client(fake)
    first = await create(client)
    second = await create(client, "second")
    assert (first["customId"], second["customId"]) == ("WO000001", "WO000002")
    await client.aclose()


async def test_429_is_retried(fake: AtlasFake) -> None:
    client = await make_client(fake)
    fake.inject("GET", "/work-orders/.*", status=429, times=2)
    created = await create(client)
    assert (await client.get_work_order(int(created["id"])))["id"] == created["id"]
    assert len(fake.requests_to("GET", "/work-orders/.*")) == 3
    await client.aclose()


async def test_500_is_retried(fake: AtlasFake) -> None:
    client = await make_client(fake)
    created = await create(client)
    fake.inject("GET", "/work-orders/.*", status=500)
    await client.get_work_order(int(created["id"]))
    assert len(fake.requests_to("GET", "/work-orders/.*")) == 2
    await client.aclose()


async def test_dropped_connection_is_retried_for_a_read(fake: AtlasFake) -> None:
    client = await make_client(fake)
    created = await create(client)
    fake.inject("GET", "/work-orders/.*", drop="before")
    await client.get_work_order(int(created["id"]))
    assert len(fake.requests_to("GET", "/work-orders/.*")) == 2
    await client.aclose()


async def test_slow_answer_times_out_and_is_retried(fake: AtlasFake) -> None:
    client = await make_client(fake, timeout_seconds=0.1)
    created = await create(client)
    fake.inject("GET", "/work-orders/.*", delay=0.3)
    await client.get_work_order(int(created["id"]))
    assert len(fake.requests_to("GET", "/work-orders/.*")) == 2
    await client.aclose()


async def test_400_is_not_retried_and_carries_atlas_message(fake: AtlasFake) -> None:
    client = await make_client(fake)
    with pytest.raises(ServiceRejected, match="400: title: must not be null"):
        await client.create_work_order({"description": "no title"})
    assert len(fake.requests_to("POST", "/work-orders")) == 1
    await client.aclose()


async def test_bad_enum_500_is_not_retried(fake: AtlasFake) -> None:
    client = await make_client(fake)
    with pytest.raises(ServiceRejected, match="Cannot deserialize"):
        await client.create_work_order({"title": "t", "priority": "URGENT"})
    assert len(fake.requests_to("POST", "/work-orders")) == 1
    await client.aclose()


async def test_persistent_503_gives_up_after_the_policy_attempts(fake: AtlasFake) -> None:
    client = await make_client(fake)
    created = await create(client)
    fake.inject("GET", "/work-orders/.*", status=503, times=10)
    with pytest.raises(ServiceUnavailable, match="after 4 attempts: Atlas answered 503"):
        await client.get_work_order(int(created["id"]))
    await client.aclose()


async def test_create_without_marker_is_not_repeated_after_a_dropped_answer(fake: AtlasFake) -> None:
    client = await make_client(fake)
    await create(client)  # signed in
    fake.inject("POST", "/work-orders", drop="after")
    with pytest.raises(ServiceUnavailable):
        await create(client, "maybe created")
    assert len(fake.work_orders) == 2
    assert len(fake.requests_to("POST", "/work-orders")) == 2
    await client.aclose()


async def test_create_with_marker_finds_its_work_order_after_a_dropped_answer(fake: AtlasFake) -> None:
    client = await make_client(fake)
    marker = "ai-employee plan: plan-1"
    fake.inject("POST", "/work-orders", drop="after")
    created = await client.create_work_order(
        {"title": "t", "description": f"text\n\n{marker}"}, marker=marker
    )
    assert len(fake.work_orders) == 1
    assert created["id"] == next(iter(fake.work_orders))
    await client.aclose()


async def test_create_with_marker_retries_a_500_after_checking_nothing_was_made(fake: AtlasFake) -> None:
    client = await make_client(fake)
    marker = "ai-employee plan: plan-2"
    fake.inject("POST", "/work-orders", status=500)
    created = await client.create_work_order({"title": "t", "description": marker}, marker=marker)
    assert len(fake.work_orders) == 1
    assert created["customId"] == "WO000001"
    assert len(fake.requests_to("POST", "/work-orders/search")) == 1
    await client.aclose()


async def test_client_given_http_client_is_not_closed(fake: AtlasFake) -> None:
    async with httpx.AsyncClient() as http:
        client = AtlasClient(fake.base_url, EMAIL, PASSWORD, http=http, retry=FAST)
        await create(client)
        await client.aclose()
        assert not http.is_closed


async def test_change_status_without_a_status_is_a_406_not_retried(fake: AtlasFake) -> None:
    client = await make_client(fake)
    created = await create(client)
    with pytest.raises(ServiceRejected, match="406"):
        await client.request("PATCH", f"/work-orders/{created['id']}/change-status", json_body={})
    assert len(fake.requests_to("PATCH", ".*/change-status")) == 1
    await client.aclose()


async def test_missing_token_is_a_403_with_an_empty_body(fake: AtlasFake) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{fake.base_url}/work-orders", json={"title": "t"})
    assert (response.status_code, response.content) == (403, b"")
