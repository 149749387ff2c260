"""Executors: what an approved plan does. Each registers itself by entry point."""
