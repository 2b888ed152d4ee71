"""The domain records every part of xdpguard agrees on: pure dataclasses, no I/O.

    packet      Packet: one sampled packet (5-tuple, flags, length, time, sampling rate)
    rules       Rule, Scope, Action, Origin: what the data plane enforces
    verdict     Verdict: what the scorer asks enforcers to do, and why

Imports: services.common only (errors); no third-party library.
"""
