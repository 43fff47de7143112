"""The cache's Redis, for the labelling loop's calls: one client per cache, reused.

Django's Redis cache builds a client object for every call, which costs most of a call after
the round trip itself; the loop's throttle and debounce make a call on every answer.
"""

from __future__ import annotations

import weakref
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache

_CLIENTS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def redis_client(store: RedisCache) -> Any:
    """A Redis client of the cache's writing pool, built once per cache."""
    pools = store._cache  # Django's RedisCacheClient: it holds the connection pools
    client = _CLIENTS.get(pools)
    if client is None:
        client = _CLIENTS[pools] = pools.get_client(write=True)
    return client


def add(key: str, seconds: int) -> bool:
    """cache.add(key, 1, timeout=seconds): set the key unless it is set; True if it was not."""
    store = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(store, RedisCache):
        made = store.make_and_validate_key(key)
        return bool(redis_client(store).set(made, 1, nx=True, ex=seconds))
    return bool(store.add(key, 1, timeout=seconds))
