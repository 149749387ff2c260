"""The control port (HTTP: probes, metrics, status, webhooks) and Dashboard.md: they read the
orchestrator and the vault from above."""
