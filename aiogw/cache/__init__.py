"""The response cache's exact tier: a stage between admission and routing. A deterministic
request (temperature 0, a seed, a deterministic task, or opted in) whose canonical form was
answered before is answered again from the store; a hit never reaches routing.

The ingress calls `ResponseCache.prepare` (policy, controls, key), then `lookup`; on a miss
it runs the request and hands the answer to `store` (written off the request path). The
package knows no HTTP: it takes header values and returns bytes and decisions."""

from aiogw.cache.controls import CacheControls, parse_controls
from aiogw.cache.entry import Entry
from aiogw.cache.service import Decision, Flight, ResponseCache

__all__ = ["CacheControls", "Decision", "Entry", "Flight", "ResponseCache", "parse_controls"]
