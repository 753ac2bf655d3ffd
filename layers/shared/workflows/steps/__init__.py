"""Step types. Each module defines one; `registry` maps type names to them."""
