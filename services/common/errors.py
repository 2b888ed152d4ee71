"""Exceptions shared by every xdpguard service and the CLI.

    XdpguardError                 base; `retriable` says whether trying again may help
    ├── ConfigError               a setting is missing or malformed
    ├── KernelError               BPF/XDP operation refused by the kernel
    │   ├── NotSupported          a kernel feature this host lacks
    │   ├── MapMismatch           a pinned map's layout differs from this build's structs
    │   ├── MapFull               a rule map has no room left
    │   └── NotLoaded             no xdpguard program/pins where expected
    ├── KafkaUnavailable          the broker could not be reached (retriable)
    ├── DecodeError               a record could not be decoded (goes to the dead-letter topic)
    └── ModelError                a model file is missing, changed or does not match its metadata

The CLI prints `str(err)` as one line and exits non-zero; tracebacks are for bugs only.
"""


class XdpguardError(Exception):
    retriable = False


class ConfigError(XdpguardError):
    pass


class KernelError(XdpguardError):
    pass


class NotSupported(KernelError):
    pass


class MapMismatch(KernelError):
    pass


class MapFull(KernelError):
    pass


class NotLoaded(KernelError):
    pass


class KafkaUnavailable(XdpguardError):
    retriable = True


class DecodeError(XdpguardError):
    pass


class ModelError(XdpguardError):
    pass
