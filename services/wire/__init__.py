"""What crosses Kafka: record codecs, topic names and specs, client options.

    codec       msgpack codecs for packet micro-batches, verdicts, rules and dead letters
    addresses   IP addresses as the records carry them: text <-> 4 or 16 packed bytes
    modelrec    the `models` topic's records (a model and when it applies) and shadow reports
    partition   Kafka's default (murmur2) partition of a key, an address or a packet event
    topics      topic names, partition counts and configs; creating and checking them
    kafka       aiokafka client options (TLS/SASL) from CommonSettings

Imports: services.common, services.records, msgpack, numpy and aiokafka. Never BCC, faust,
scikit-learn or offline code.
"""
