"""A listing's position: the key of the last item returned, as plain strings.

The edge turns it into an opaque cursor and hands it back unchanged; only the store that made
it reads it.
"""

from __future__ import annotations

Position = dict[str, str]
