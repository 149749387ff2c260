"""Planners: turn an action into a proposed plan. Each registers itself by entry point."""
