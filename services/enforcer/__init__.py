"""The enforcer service: verdicts in, rules in the pinned XDP maps and the `rules` topic out.

    service.py     the service loop: lifecycle (start, stop on SIGTERM), consuming verdicts, sweeps
    policy.py      RulePolicy: what to do with a verdict (pure: no kernel, no Kafka, no clock)
    learning.py    learning mode: model rules only written down until ENFORCER_LEARN_UNTIL (pure)
    actuator.py    MapActuator: decisions carried out on the maps, expiry, program reloads
    reconciler.py  RulesReconciler: the `rules` topic (records, tombstones, restore, manual rules)
    ruleslog.py    the Kafka adapter for the `rules` topic
    maps.py        the data plane as typing.Protocols (RuleMaps, Dataplane) and the pinned one
    hostfacts.py   this host's addresses and the allowlist
    settings.py, metrics.py, __main__.py

May import services.common, records, dataplane and wire (tests/unit/test_layout_imports.py);
never the offline or detection code.
"""
