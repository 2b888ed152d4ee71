"""The `xdpguard` CLI: one module per verb group, each with `register(subparsers)` (cli.py).

    cli.py                          the parser and the one error line / exit status
    load_cmd, rules_cmd, ruleargs   load/unload/status; add/del/list/allow/stats on the live maps
    monitor_cmd, top_cmd            sampled packets to a JSON-lines log; a live view of the maps
    drift_view                        top's drift line, from the scorer workers' /metrics
    analyze_cmd, flows_cmd          logs in the original tool's format (docs/origins.md)
    train_cmd, evaluate_cmd         fit a model; replay labelled captures into a report
    learn_cmd                       a site model from the site's traffic, validated before use
    topics_cmd, groups_cmd,         topics and consumer groups; kafka_inspect holds the read-only
    kafka_inspect, config_cmd         cluster views; every environment variable with its default
    demo_cmd, demo_stack, netns     the one-host demonstration (namespaces, all services)
    progress                        progress bars on stderr

May import every xdpguard package (it is the only one that may import the offline code and the
services); scikit-learn, scapy, matplotlib, faust and BCC are imported only inside the verbs that
use them, so building the parser loads none of them.
"""
