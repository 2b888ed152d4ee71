"""The scorer service: N faust workers, one consumer group, `packets` -> `verdicts`.

Pure logic: windows (both stages' event-time windows), chunks (the record between the stages
and its validation), scoring (the batched model call's rows to verdicts). Adapters: ingest (stage 1), collect (stage 2), tables (the window tables' keys and
I/O), faust_internals (every faust/mode internal relied on, probed by a unit test), delivery
(waiting for acknowledgements, telling a send refused for good from one that may pass). Runtime:
service (the Scorer around both stages: timers, dead letters), metrics (counters and /healthz),
app (faust wiring only), topics (topics created before joining), settings, __main__.

May import services.common, records, wire and detection; faust, mode, aiokafka and the model's
libraries (tests/unit/test_layout_imports.py).
"""
