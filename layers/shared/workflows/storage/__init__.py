"""Storage: one repository per aggregate, each owning its key format."""
