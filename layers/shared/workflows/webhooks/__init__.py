"""Outgoing webhooks: Standard Webhooks signing, HTTP delivery, and the retry table (DLQ)."""
