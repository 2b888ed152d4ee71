"""The node side of the XDP program: loading it, its pinned maps, its ring buffer.

    bpfsys      ctypes bindings to libbpf (bundled in libbcc): map/prog fds, pins, lookups
    structs     the ctypes mirror of bpf/xdpguard.h (structs and constants)
    maps        the one table of the program's maps (name, type, key/value, size, flags) and
                the check of a pinned map against it
    pinlock     the flock on the pin directory every map writer holds (one writer at a time)
    loader      compile with BCC, pin, attach/detach, status
    entries     which map and key a Rule is written under, and the Rules read back from the maps
    datapath    Datapath: the live maps of a loaded program, opened from their pins
    ringbuf     read sampled packet events from the pinned ring buffer

Imports: services.common and services.records; BCC (loader only). Never Kafka, detection or
offline code: the node services (capture, enforcer) stand on this package.
"""
