"""exit_on_error: the benches' (and any script's) way to end as the CLI does."""
import pytest

from services.common.errors import ConfigError, KafkaUnavailable, exit_on_error


@pytest.mark.parametrize("err", [ConfigError("XDPGUARD_X=1: not a port"),
                                 KafkaUnavailable("cannot reach Kafka at 127.0.0.1:9")])
def test_an_xdpguard_error_is_one_line_and_status_1(err, capsys):
    def main():
        raise err
    with pytest.raises(SystemExit) as stop:
        exit_on_error("some_bench", main)
    assert stop.value.code == 1
    assert capsys.readouterr().err == f"some_bench: error: {err}\n"


@pytest.mark.parametrize("status,code", [(None, 0), (0, 0), (3, 3)])
def test_the_status_main_returns_is_the_exit_status(status, code):
    with pytest.raises(SystemExit) as stop:
        exit_on_error("b", lambda: status)
    assert stop.value.code == code


def test_a_bug_is_still_a_traceback():
    with pytest.raises(ZeroDivisionError):
        exit_on_error("b", lambda: 1 // 0)
