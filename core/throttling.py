"""Request throttles that keep working when their cache (Redis) is down."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle, SimpleRateThrottle

from core.cache import redis_client

logger = logging.getLogger("quorum.throttling")

# DRF's sliding window (the request times of the last `duration` seconds, at most `limit` of
# them) as one Redis call: drop the times that left the window, refuse when it is full (a
# refused request is not counted, as in DRF), else add this one. Returns {allowed, how many in
# the window, the oldest time in it}.
_WINDOW = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[2]))
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, n, oldest[2]}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return {1, n + 1, ARGV[1]}
"""


class _RedisWindow(SimpleRateThrottle):
    """DRF's rate throttle in one Redis round trip (a script) instead of a read and a write of
    a pickled list; with another cache (the in-process one), DRF's own."""

    _script: Any = None  # the registered script (its sha1 computed once, used with any client)
    num_requests: int  # set with the rate by SimpleRateThrottle
    duration: int

    def allow_request(self, request: Request, view: Any) -> bool:
        store = caches[DEFAULT_CACHE_ALIAS]
        if self.rate is None or not isinstance(store, RedisCache):
            return bool(super().allow_request(request, view))
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        client = redis_client(store)
        script = _RedisWindow._script
        if script is None:
            script = _RedisWindow._script = client.register_script(_WINDOW)
        self.now = self.timer()
        member = f"{self.now!r}:{secrets.token_hex(4)}"
        allowed, self.in_window, oldest = script(
            # Not DRF's key, which holds a pickled list (a process of an older version may
            # still write it during an upgrade).
            keys=[store.make_and_validate_key(f"window:{self.key}")],
            args=[repr(self.now), self.duration, self.num_requests, member],
            client=client,
        )
        self.oldest = float(oldest)
        return bool(allowed)

    def wait(self) -> float | None:
        """DRF's hint for a refused request: the rest of the window shared among the requests
        that will fit in it."""
        if not hasattr(self, "in_window"):
            return super().wait()
        available = self.num_requests - int(self.in_window) + 1
        if available <= 0:
            return None
        return float(self.duration - (self.now - self.oldest)) / available


class FailOpenScopedRateThrottle(ScopedRateThrottle, _RedisWindow):
    """DRF's scoped rate throttle, letting requests through while the cache cannot be reached.

    The throttle counts requests in the cache, which is Redis in production. A labeller's answer
    must be saved even when Redis is down, so a cache failure lets the request through (and is
    logged) instead of failing it with a 500: the limit is a guard against floods, not a rule.
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        try:
            return bool(super().allow_request(request, view))
        except Exception:
            logger.warning("rate limit %r not checked: the cache is unavailable", self.scope)
            return True
