"""Event bus backends behind `ai_employee.model.bus.EventBus` (in process), and the Redis Streams
transport of distributed work (`redis_streams`, `work_codec`, `redis_work`: docs/distributed.md)."""
