"""The capture service: sampled packet events from the pinned ring buffer out to `packets`.

    service.py    Capture: the reader thread, the bounded queue, the sampling loop, start/stop
    fastring.py   FastRing: the ring buffer mapped and copied in bulk as numpy arrays
    columns.py    events as numpy columns: epoch time, sequence numbers, partition, encoding
    publisher.py  Publisher: per-node sequence numbers, a bounded buffer, aiokafka micro-batches
    sampling.py   SamplingController: when to raise or lower the kernel's 1-in-N rate (pure)
    settings.py, __main__.py

May import services.common, records, dataplane and wire; numpy and aiokafka (BCC only through
services.dataplane). Never detection, offline, the scorer's stack (faust, scikit-learn) nor
scapy/matplotlib (tests/unit/test_layout_imports.py, also in a fresh interpreter).
"""
