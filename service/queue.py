"""The arq queue: a JSON-serialising Redis pool and enqueueing events by id.

Jobs carry event ids, never payloads: the inbox row is the source of truth, Redis is the fast path.
arq's `_job_id` only guards against in-flight duplicates (its dedup ends when the job finishes,
docs/arq.md#job-id-dedup), so exactly-once is enforced by the order store, not here.
"""

from __future__ import annotations

import json
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any, Final

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix
from redis.asyncio import BlockingConnectionPool
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from service.timeouts import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S

RECONCILE_FUNCTION: Final = "reconcile_event"
DEFAULT_QUEUE_NAME: Final = "wooshpay:queue"
JOB_ID_PREFIX: Final = "evt:"
# What "Redis is unreachable or too slow" looks like to a caller.
QUEUE_ERRORS: Final = (RedisError, OSError, TimeoutError)


def serialize_job(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def deserialize_job(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("job payload is not a JSON object")
    return value


def create_redis(
    redis_url: str, *, queue_name: str = DEFAULT_QUEUE_NAME, max_connections: int = 50
) -> ArqRedis:
    """An ArqRedis that connects lazily, so a process starts even while Redis is down.

    A blocking pool waits for a free connection instead of failing a burst of enqueues.
    """
    pool = BlockingConnectionPool.from_url(
        redis_url,
        max_connections=max_connections,
        timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
    )
    redis = ArqRedis(
        pool_or_conn=pool,
        job_serializer=serialize_job,
        job_deserializer=deserialize_job,
        default_queue_name=queue_name,
    )
    # The pool is ours: aclose() must disconnect it (redis-py leaves a passed-in pool open).
    redis.auto_close_connection_pool = True
    return redis


def job_id_for(event_id: str) -> str:
    """The stable job id of an event's first delivery: arq refuses it while one is in flight."""
    return f"{JOB_ID_PREFIX}{event_id}"


def replay_job_id_for(event_id: str) -> str:
    """A fresh job id, so a replay is never swallowed by arq's in-flight dedup."""
    return f"evt:{event_id}:replay:{uuid.uuid4().hex}"


async def enqueue_event(
    redis: ArqRedis, event_id: str, *, job_id: str | None = None, defer_s: float | None = None
) -> bool:
    """Enqueue the reconcile job for an event; False when arq already holds that job id."""
    job = await redis.enqueue_job(
        RECONCILE_FUNCTION,
        event_id,
        _job_id=job_id or job_id_for(event_id),
        _defer_by=defer_s,
    )
    return job is not None


async def enqueue_now(redis: ArqRedis, event_ids: Sequence[str]) -> int:
    """Enqueue each event under a fresh job id (a replay's, a heal's), so it runs now even while
    an earlier job for it still waits out a backoff; how many were enqueued. Redis errors reach
    the caller, which decides what a deferral means."""
    enqueued = 0
    for event_id in event_ids:
        if await enqueue_event(redis, event_id, job_id=replay_job_id_for(event_id)):
            enqueued += 1
    return enqueued


# Enqueue many jobs in one round trip, exactly as arq's enqueue_job would one by one: a job id
# whose job or result key exists is skipped (arq's in-flight dedup), else its job key is written
# with arq's expiry and the id is added to the queue. Returns how many jobs were created.
# The script writes each job's payload itself, the JSON `serialize_job` makes of arq's job
# fields for this call, so the ingress sends Redis only the event ids.
_ENQUEUE_MANY_LUA: Final = """
local queue, expires_ms, enqueued_ms, func, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local head = '{"t":null,"f":' .. cjson.encode(func) .. ',"a":['
local tail = '],"k":{},"et":' .. enqueued_ms .. '}'
local created = 0
for i = 6, #ARGV do
  local job_id = prefix .. ARGV[i]
  if redis.call('EXISTS', KEYS[1] .. job_id, KEYS[2] .. job_id) == 0 then
    redis.call('PSETEX', KEYS[1] .. job_id, expires_ms, head .. cjson.encode(ARGV[i]) .. tail)
    redis.call('ZADD', queue, enqueued_ms, job_id)
    created = created + 1
  end
end
return created
"""


# One script object per client: registering hashes the script, on every enqueue otherwise.
_SCRIPTS: weakref.WeakKeyDictionary[ArqRedis, AsyncScript] = weakref.WeakKeyDictionary()


def _enqueue_many_script(redis: ArqRedis) -> AsyncScript:
    script = _SCRIPTS.get(redis)
    if script is None:
        script = _SCRIPTS[redis] = redis.register_script(_ENQUEUE_MANY_LUA)
    return script


async def enqueue_events(redis: ArqRedis, event_ids: Sequence[str]) -> int:
    """Enqueue the reconcile jobs of many events (stable job ids) in one Redis round trip."""
    if not event_ids:
        return 0
    now_ms = int(time.time() * 1000)
    arguments: list[str | int] = [
        redis.default_queue_name,
        redis.expires_extra_ms,
        now_ms,
        RECONCILE_FUNCTION,
        JOB_ID_PREFIX,
        *event_ids,
    ]
    created = await _enqueue_many_script(redis)(
        keys=[job_key_prefix, result_key_prefix], args=arguments
    )
    return int(created)


async def queue_depth(redis: ArqRedis) -> int:
    return int(await redis.zcard(redis.default_queue_name))
