"""What every xdpguard service needs, and nothing else.

    config      typed settings read once from prefixed environment variables (`setting`, `load`)
    settings    CommonSettings: the XDPGUARD_ settings all services share
    errors      the exception tree (XdpguardError and its kinds)
    lifecycle   running a service: logging, signals, start/run/stop, the metrics server
    health      the /metrics and /healthz HTTP server
    paths       where the installed bpf/ and models/ live

Imports: the standard library, prometheus_client and uvloop only; no other xdpguard package.
"""
