"""`python -m services.enforcer`: settings from XDPGUARD_* and ENFORCER_* (docs/enforcer.md)."""
import sys

from aiokafka.errors import KafkaError

from services.common.errors import XdpguardError
from services.common.lifecycle import run_main, serve, setup_logging
from services.common.settings import load_common

from .service import Enforcer
from .settings import load_enforcer


async def main() -> int:
    common, settings = load_common(), load_enforcer()
    enforcer = Enforcer(common, settings)
    return await serve(enforcer, metrics_host=settings.metrics_host,
                       metrics_port=settings.metrics_port)


if __name__ == "__main__":
    setup_logging("enforcer")
    try:
        sys.exit(run_main(main))
    except XdpguardError as exc:
        print(f"enforcer: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KafkaError as exc:  # what the cluster answered, not a bug of ours: one line
        print(f"enforcer: error: Kafka: {exc}", file=sys.stderr)
        sys.exit(1)
