"""Broker settings are checked at load, by type and range, one line per problem, in the TOML
file and on the command line alike; a broker that cannot start says why in one line."""

from __future__ import annotations

import ast
import dataclasses
import socket
import subprocess
import sys

import pytest
from sluice.broker.config import RULES, BrokerConfig
from sluice.protocol.errors import InvalidConfigError

from tests.processes import parse_announcement, subprocess_env


def load_toml(tmp_path, text: str, **flags) -> BrokerConfig:
    path = tmp_path / "sluice.toml"
    path.write_text(text)
    return BrokerConfig.load(path, **flags)


def problems_of(tmp_path, text: str, **flags) -> list[str]:
    with pytest.raises(InvalidConfigError) as caught:
        load_toml(tmp_path, text, **flags)
    return str(caught.value).splitlines()


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # a string where an integer belongs
        ('port = "9099"', "port: must be an integer in 0..65535, got '9099' (a string)"),
        # a string where a boolean belongs: "false" must not mean true
        ('in_memory = "false"', "in_memory: must be true or false, got 'false' (a string)"),
        # a fraction where an integer belongs
        ("max_frame_bytes = 1.5", "max_frame_bytes: must be an integer in 1024..4294967295, got 1.5"),
        # a boolean where an integer belongs
        ("max_connections = true", "max_connections: must be an integer in 1..1000000, got true"),
        # a number where a path belongs
        ("data_dir = 5", "data_dir: must be a directory path (a non-empty string), got 5"),
        # a number where a string belongs, and an empty string
        ("host = 127", "host: must be a non-empty string, got 127"),
        ('host = ""', "host: must be a non-empty string, got ''"),
        # out of range, above and below
        ("port = 70000", "port: must be an integer in 0..65535, got 70000"),
        ("broker_id = -1", "broker_id: must be an integer in 0..2147483647, got -1"),
        ("max_frame_bytes = 10", "max_frame_bytes: must be an integer in 1024..4294967295, got 10"),
        # durations: positive numbers, finite
        ("idle_timeout_s = 0", "idle_timeout_s: must be a number greater than 0, got 0"),
        ("send_timeout_s = -2.5", "send_timeout_s: must be a number greater than 0, got -2.5"),
        ("shutdown_grace_s = inf", "shutdown_grace_s: must be a number greater than 0, got inf"),
        ('checkpoint_interval_s = "10s"', "checkpoint_interval_s: must be a number greater than 0"),
        # a value outside a fixed set
        ('log_level = "loud"', "log_level: must be one of DEBUG, INFO, WARNING, ERROR, got 'loud'"),
        # a list of the wrong things
        ('repair_truncate = "orders-3"', "repair_truncate: must be a list of TOPIC-PARTITION names"),
        ('repair_truncate = ["orders"]', "repair_truncate: 'orders' is not a TOPIC-PARTITION name"),
        # the Kafka listener: a port, on or off, never the Sluice port
        ("kafka_port = 70000", "kafka_port: must be an integer in 0..65535, got 70000"),
        ('kafka = "no"', "kafka: must be true or false, got 'no' (a string)"),
        ("port = 9100\nkafka_port = 9100", "kafka_port: must differ from the Sluice port (9100)"),
        ("port = 65535", "port: the Kafka listener's default port (port + 1) would be 65536"),
        # an unknown key, with the likely meant one
        ("prot = 9092", "prot: unknown setting (did you mean port?)"),
        ("[broker]\nport = 1", "broker: unknown setting"),
        # topic defaults: not a table, an unknown key, a bad value, a wrong type
        ("topic_defaults = 5", "topic_defaults: must be a table of topic configs, got 5"),
        ("[topic_defaults]\nretention = 1", "topic_defaults: unknown config key(s) retention"),
        ("[topic_defaults]\npartitions = 0", "topic_defaults: partitions must be in [1, 10000], got 0"),
        ('[topic_defaults]\nsegment_bytes = "1GiB"', "topic_defaults: segment_bytes must be an integer"),
    ],
)
def test_each_kind_of_mistake_in_the_file_is_one_clear_line(tmp_path, toml, expected):
    lines = problems_of(tmp_path, toml + "\n")
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{tmp_path / 'sluice.toml'}: {expected}"), lines[0]


def test_every_mistake_is_reported_at_once(tmp_path):
    lines = problems_of(
        tmp_path,
        'in_memory = "false"\nmax_frame_bytes = 1.5\nport = "9099"\ndata_dir = 5\n'
        "[topic_defaults]\npartitions = 0\nsegment_bytes = -1\n",
    )
    names = [line.split(": ")[1] for line in lines]
    assert names == ["in_memory", "max_frame_bytes", "port", "data_dir", "topic_defaults",
                     "topic_defaults"]


def test_flags_are_checked_and_named_as_flags(tmp_path):
    lines = problems_of(tmp_path, "port = 9092\n", port=70000, host="", data_dir="")
    assert lines == [
        "--port: must be an integer in 0..65535, got 70000",
        "--host: must be a non-empty string, got '' (a string)",
        "--data-dir: must be a directory path (a non-empty string), got '' (a string)",
    ]


def test_flags_override_the_file(tmp_path):
    config = load_toml(tmp_path, "port = 1\nin_memory = false\n", port=2, in_memory=True)
    assert (config.port, config.in_memory) == (2, True)


def test_valid_settings_load_with_their_types(tmp_path):
    config = load_toml(
        tmp_path,
        'data_dir = "d"\nidle_timeout_s = 5\nlog_level = "debug"\nrepair_truncate = ["a-0"]\n'
        "[topic_defaults]\npartitions = 3\n",
    )
    assert config.data_dir.name == "d" and config.idle_timeout_s == 5
    assert config.repair_truncate == ("a-0",) and config.topic_defaults == {"partitions": 3}


def test_the_kafka_port_follows_the_sluice_port_unless_set(tmp_path):
    assert BrokerConfig().kafka_listen_port == 9093
    assert BrokerConfig(port=9200).kafka_listen_port == 9201
    assert BrokerConfig(port=0).kafka_listen_port == 0  # any free port, for both
    assert BrokerConfig(port=9200, kafka_port=9092).kafka_listen_port == 9092
    assert BrokerConfig(port=65535, kafka=False).kafka_listen_port is None
    assert load_toml(tmp_path, "kafka_port = 19093\n", kafka=False).kafka_listen_port is None
    assert problems_of(tmp_path, "port = 9100\n", kafka_port=9100) == [
        "--kafka-port: must differ from the Sluice port (9100): two listeners cannot share a port"]


def test_no_two_listeners_share_a_port(tmp_path):
    assert problems_of(tmp_path, "port = 9100\n", http_port=9101) == [
        "--http-port: must differ from the Kafka port (9101): two listeners cannot share a port"]
    assert problems_of(tmp_path, "port = 9100\nkafka = false\n", http_port=9100) == [
        "--http-port: must differ from the Sluice port (9100): two listeners cannot share a port"]
    load_toml(tmp_path, "port = 9100\nkafka = false\n", http_port=9101)
    load_toml(tmp_path, 'port = 9100\nhttp_host = "0.0.0.0"\n', http_port=9101)  # other host
    load_toml(tmp_path, "port = 0\n", http_port=0)  # any free ports


def test_unreadable_and_invalid_files_are_one_line(tmp_path):
    with pytest.raises(InvalidConfigError, match="cannot read config file .*missing.toml"):
        BrokerConfig.load(tmp_path / "missing.toml")
    with pytest.raises(InvalidConfigError, match="is not valid TOML"):
        load_toml(tmp_path, "port = \n")


def test_direct_construction_is_checked_too():
    with pytest.raises(InvalidConfigError, match="port: must be an integer"):
        BrokerConfig(port="9099")


def test_every_setting_has_a_rule():
    assert set(RULES) == {f.name for f in dataclasses.fields(BrokerConfig)}


# -- the broker process ---------------------------------------------------------------------


def run_broker(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sluice.broker", *args], capture_output=True, text=True,
        env=subprocess_env(), cwd=cwd, timeout=60,
    )


def test_settings_problems_exit_2_one_line_each(tmp_path):
    (tmp_path / "s.toml").write_text('in_memory = "false"\n[topic_defaults]\npartitions = 0\n')
    result = run_broker("--config", "s.toml", "--port", "70000", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "sluice broker: s.toml: in_memory: must be true or false, got 'false' (a string)",
        "sluice broker: s.toml: topic_defaults: partitions must be in [1, 10000], got 0",
        "sluice broker: --port: must be an integer in 0..65535, got 70000",
    ]
    assert not (tmp_path / "sluice-data").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "abc"], "sluice broker: argument --port: invalid int value: 'abc' (see --help)"),
        (["--log-level", "loud"], "sluice broker: argument --log-level: invalid choice: 'LOUD'"),
        (["--data-dir", ""], "sluice broker: --data-dir: must be a directory path"),
        (["--repair-truncate", "orders"], "sluice broker: --repair-truncate: 'orders' is not a"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, args, expected):
    result = run_broker(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr


def test_port_in_use_is_named_and_the_data_dir_left_alone(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_broker("--port", str(port), "--data-dir", "data", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"sluice broker: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert not (tmp_path / "data").exists()


def test_kafka_port_in_use_is_named_with_the_way_out(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_broker("--port", "0", "--kafka-port", str(port), "--data-dir", "data",
                            cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"sluice broker: cannot listen for Kafka clients on 127.0.0.1:{port}: Address already "
        "in use (another port: --kafka-port or kafka_port; none: --no-kafka or kafka = false)"
    )
    assert not (tmp_path / "data").exists()


def test_unusable_data_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    result = run_broker("--port", "0", "--data-dir", "file", cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("sluice broker: cannot open data directory file: "), result.stderr
    assert "Traceback" not in result.stderr


def test_startup_log_says_where_the_data_lives_and_listening_once(tmp_path):
    for args, where in ((["--data-dir", "d"], f"data in {tmp_path / 'd'}"),
                        (["--in-memory"], "in memory: nothing is kept after it stops")):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sluice.broker", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
            cwd=tmp_path,
        )
        try:
            lines = [proc.stdout.readline(), proc.stdout.readline()]
            announced = parse_announcement(lines)
            assert announced is not None and announced.kafka_port not in (None, 0), lines
            assert lines[0] == f"kafka listener on 127.0.0.1:{announced.kafka_port}\n"
            assert lines[1] == f"listening on 127.0.0.1:{announced.port}\n"
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert where in err
        assert "listening" not in err  # stdout says it; the log must not say it again


def test_the_broker_s_parser_is_built_without_the_broker():
    """``sluice broker --help`` (and the CLI building the broker command) needs the settings
    only: not trio, not the server, not the layers under it."""
    probe = (
        "import sys\n"
        "from sluice.broker.__main__ import build_parser\n"
        "build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'trio' or m.startswith('sluice.broker.')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            env=subprocess_env(), timeout=30, check=True)
    loaded = ast.literal_eval(result.stdout)
    assert loaded == ["sluice.broker.__main__", "sluice.broker.config", "sluice.broker.storage",
                      "sluice.broker.storage.config"], loaded


def test_no_kafka_means_no_kafka_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "sluice.broker", "--port", "0", "--in-memory", "--no-kafka"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
        cwd=tmp_path,
    )
    try:
        ready = proc.stdout.readline()  # the first line is the ready line: no Kafka line
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    announced = parse_announcement([ready])
    assert ready == f"listening on 127.0.0.1:{announced.port}\n"
    assert announced.kafka_port is None and announced.http is None
