"""The engine: dispatch messages, the per-message run advance, retry policy, templating."""
