"""`python -m services.capture`: settings from XDPGUARD_* and CAPTURE_* (docs/capture.md)."""
import sys

from aiokafka.errors import KafkaError

from services.common.errors import XdpguardError
from services.common.lifecycle import run_main, serve, setup_logging
from services.common.settings import load_common

from .service import Capture
from .settings import load_capture


async def main() -> int:
    common, settings = load_common(), load_capture()
    capture = Capture(common, settings)
    return await serve(capture, metrics_host=settings.metrics_host, metrics_port=settings.metrics_port)


if __name__ == "__main__":
    setup_logging("capture")
    try:
        sys.exit(run_main(main))
    except XdpguardError as exc:
        print(f"capture: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KafkaError as exc:  # what the cluster answered, not a bug of ours: one line
        print(f"capture: error: Kafka: {exc}", file=sys.stderr)
        sys.exit(1)
