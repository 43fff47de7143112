"""Request throttles that keep working when their cache (Redis) is down."""

from __future__ import annotations

import logging
from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import ScopedRateThrottle

logger = logging.getLogger("quorum.throttling")


class FailOpenScopedRateThrottle(ScopedRateThrottle):
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
