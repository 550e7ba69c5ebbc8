"""sublevel: how many degrees of freedom does training a network need?

Science lives here; orchestration lives in workflow/. Every path is owned by
:mod:`sublevel.paths` and every table by :mod:`sublevel.schema`.
"""

__version__ = "0.1.0"
