"""Which model a request gets: names and aliases, who may use what, fallback chains and their order."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from chat.errors import ModelNotFound
from chat.gateway.access import forget_access, key_allowed, user_allowed_sync
from chat.gateway.models import ModelAccess
from chat.gateway.types import Subject
from chat.services.model_routing import model_choose, models_for, route_plan
from inference.catalog import ModelCatalog
from inference.config import EMBEDDING, GENERATION, OPENAI, EndpointConfig, GroupConfig
from inference.registry import Registry, set_registry

pytestmark = [pytest.mark.fast]

ALPHA = GroupConfig("alpha", id=1, aliases=("a", "alpha-latest"), fallbacks=("beta", "gone", "emb", "alpha"))
BETA = GroupConfig("beta", id=2, context_window=8192)
GAMMA = GroupConfig("gamma", id=3, fallbacks=("beta",))
EMB = GroupConfig("emb", kind=EMBEDDING, id=4, aliases=("text-embedding-3-small",))


def endpoint(name: str, group: str, window: int | None = None) -> EndpointConfig:
    return EndpointConfig(
        name=name, kind=GENERATION, protocol=OPENAI, base_url="http://127.0.0.1:9/v1", group=group,
        context_window=window,
    )  # fmt: skip


@pytest.fixture
async def registry():
    registry = Registry.static(
        [endpoint("ep-a", "alpha", 512), endpoint("ep-b", "beta"), endpoint("ep-g", "gamma")],
        [ALPHA, BETA, GAMMA, EMB],
    )
    previous = set_registry(registry)
    await registry.catalog()
    yield registry
    set_registry(previous)


def test_the_catalog_resolves_names_and_aliases_and_builds_fallback_chains():
    catalog = ModelCatalog([ALPHA, BETA, GAMMA, EMB])
    assert catalog.resolve("alpha") is ALPHA and catalog.resolve("alpha-latest") is ALPHA
    assert catalog.resolve("text-embedding-3-small") is EMB and catalog.resolve("nope") is None
    # Unknown, non-generation and self fallbacks are skipped; order is kept.
    assert [g.name for g in catalog.chain(ALPHA)] == ["alpha", "beta"]
    assert [g.name for g in catalog.groups(GENERATION)] == ["alpha", "beta", "gamma"]
    assert catalog.embedding_group() is EMB
    # A group's name wins over another group's alias.
    clash = ModelCatalog([ALPHA, GroupConfig("a", id=9)])
    assert clash.resolve("a").name == "a"


@pytest.mark.django_db
def test_a_users_models_are_the_union_of_their_lists_and_a_key_narrows_them():
    user = get_user_model().objects.create_user("ann")
    assert user_allowed_sync(user.pk) is None  # nothing stated: every model
    staff = Group.objects.create(name="staff")
    user.groups.add(staff)
    ModelAccess.objects.create(group=staff, allowed_models=[1, 2])
    ModelAccess.objects.create(group=Group.objects.create(name="other"), allowed_models=[3])
    assert user_allowed_sync(user.pk) == {1, 2}
    ModelAccess.objects.create(user=user, allowed_models=[3, "junk"])
    assert user_allowed_sync(user.pk) == {1, 2, 3}
    assert key_allowed([], frozenset({1, 2})) == {1, 2}
    assert key_allowed([2, 5], frozenset({1, 2})) == {2}  # never wider than the owner's
    assert key_allowed([2, 5], None) == {2, 5}
    assert key_allowed([5], frozenset({1})) == frozenset()  # nothing: every model is a 404


async def test_resolution_follows_access_and_answers_404_the_same_for_unknown_and_forbidden(registry):
    key = Subject(user_id=1, api_key_id=1, key_models=frozenset({1, 4}))
    choice = await model_choose(key, "a")
    assert (choice.name, [g.name for g in choice.chain]) == ("alpha", ["alpha"])  # beta: not allowed, skipped
    for name in ("beta", "no-such-model"):
        with pytest.raises(ModelNotFound) as exc:
            await model_choose(key, name)
        assert exc.value.http_status == 404 and exc.value.code == "model_not_found"
        assert f"`{name}` does not exist or you do not have access to it" in exc.value.message
    assert (await model_choose(key, None, kind=EMBEDDING)).name == "emb"
    with pytest.raises(ModelNotFound):
        await model_choose(key, "alpha", kind=EMBEDDING)  # a chat model is not an embedding model
    with pytest.raises(ModelNotFound):
        await model_choose(key, "emb")
    assert [g.name for g in await models_for(key)] == ["alpha", "emb"]
    free = Subject(user_id=1, api_key_id=2)
    assert [g.name for g in (await model_choose(free, "alpha")).chain] == ["alpha", "beta"]
    # "default" names the default chat model, whatever it is called in this deployment.
    assert (await model_choose(free, "default", default="gamma")).name == "gamma"
    assert (await model_choose(key, "default", default="gamma")).name == "alpha"  # gamma: not the key's


async def test_anonymous_callers_get_the_default_model_only(registry):
    anonymous = Subject(session_key="s", is_anonymous=True)
    assert (await model_choose(anonymous, None)).name == "alpha"  # no setting, no env group: the first
    assert (await model_choose(anonymous, None, default="gamma")).name == "gamma"
    assert (await model_choose(anonymous, "gamma", default="gamma")).chain == (GAMMA,)  # beta: not theirs
    with pytest.raises(ModelNotFound):
        await model_choose(anonymous, "beta", default="gamma")
    assert [g.name for g in await models_for(anonymous, default="gamma")] == ["gamma"]


@pytest.mark.django_db(transaction=True)
async def test_a_signed_in_users_access_is_read_once_and_cached(registry):
    from channels.db import database_sync_to_async

    @database_sync_to_async
    def restrict() -> int:
        user = get_user_model().objects.create_user("bo")
        ModelAccess.objects.create(user=user, allowed_models=[3])
        return user.pk

    forget_access()
    uid = await restrict()
    subject = Subject(user_id=uid)
    assert (await model_choose(subject, None)).name == "gamma"  # the default, within what they may use
    with pytest.raises(ModelNotFound):
        await model_choose(subject, "alpha")
    forget_access()


async def test_the_route_puts_fitting_usable_groups_first(registry):
    choice = await model_choose(Subject(user_id=1, api_key_id=2), "alpha")
    windows = {"alpha": 512, "beta": 8192}

    def window_of(group):
        return windows[group.name]

    route = route_plan(choice, window_of=window_of, fits=lambda w: True)
    assert [(c.group.name, c.reason) for c in route] == [("alpha", ""), ("beta", "unavailable")]
    route = route_plan(choice, window_of=window_of, fits=lambda w: w > 1000)  # too long for alpha
    assert [(c.group.name, c.reason) for c in route] == [("beta", "context")]
    assert route_plan(choice, window_of=window_of, fits=lambda w: False) == []
    (alpha_endpoint,) = registry.group_endpoints("alpha")
    for _ in range(10):  # alpha's only endpoint fails until its breaker opens
        alpha_endpoint.breaker.record_failure()
    route = route_plan(choice, window_of=window_of, fits=lambda w: True)
    assert [(c.group.name, c.reason) for c in route] == [("beta", "unavailable"), ("alpha", "")]
    assert registry.group_context_window(ALPHA) == 512 and registry.group_context_window(BETA) == 8192
