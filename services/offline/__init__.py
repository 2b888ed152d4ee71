"""Offline work for the CLI and the tests: reading captures, replaying, training, evaluating.

    pcap           pcap/pcapng files -> Packet records (scapy's raw readers)
    seedlog        the original tool's JSON-lines log and commands file
    kafka_packets  packet events of a time range read back from the `packets` topic
    replay         the live pipeline's logic over a packet stream, with a simulated data plane
    training       captures -> feature rows -> fitted and calibrated model
    evaluation     replaying held-out captures and measuring what a user lives with
    reference      the shipped benign baseline and attack set, stored beside the model
    sitemodel      a site model: the site's traffic + the baseline, validated (xdpguard learn)
    report         report.json / report.md / report.png

Imports: services.common, records, wire and detection; scapy and matplotlib. The node services
(capture, enforcer) and the scorer never import this package.
"""
