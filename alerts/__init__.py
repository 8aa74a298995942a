"""Delivery: Slack, the console, and the outbox that makes delivery reliable."""
