"""Documentation written from the code, for developers (`make docs`); not part of the Lambda layer.

reference.py: the step reference in docs/steps.md, from the step models.
"""
