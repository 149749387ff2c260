"""Supervision: every item's life as a Slack thread with Approve / Reject buttons, Slack messages
becoming actions, and alerts when a service or an outside dependency goes bad (docs/slack.md)."""
