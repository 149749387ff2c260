"""ai-employee: a local-first AI employee that works out of an Obsidian vault."""

__version__ = "0.1.0"
