"""xdpguard's Python packages: common, records, dataplane, wire, detection, offline and the
services capture, scorer, enforcer and manager (the CLI). docs/architecture.md draws the map and
what each may import; each package's __init__ lists its modules."""
