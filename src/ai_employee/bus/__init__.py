"""Event bus backends behind `ai_employee.model.bus.EventBus`: in-process today; Redis Streams next."""
