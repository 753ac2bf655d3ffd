"""The chaos suite: the local stack under process faults, checked against the service's promises."""
