"""The event bus: one interface, in-process and (later) Redis Streams backends."""

from ai_employee.bus.base import EventBus, EventHandler, Subscription
from ai_employee.bus.inprocess import InProcessEventBus

__all__ = ["EventBus", "EventHandler", "InProcessEventBus", "Subscription"]
