"""celery-autoscale's load generator: ``python -m loadgen PATTERN [options]``.

- :mod:`loadgen.patterns`: burst, steady, ramp, oscillate and replay as ``due(t)`` functions.
- :mod:`loadgen.run`: open-loop sending, backlog sampling and result collection.
- :mod:`loadgen.report`: the summary, its table and the timeline plot.
- :mod:`loadgen.cli`: the command line; ``--help`` is its reference.
- :mod:`loadgen.stack`: the embedded local stack (Redis, workers, Flower) of ``make demo``.
- :mod:`loadgen.demo`: ``make demo``.
"""
