"""The generic typed config reader (qiter.config) on a small config dataclass of its own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from qiter.config import (
    checker,
    config_from_dict,
    config_to_dict,
    convert_value,
    convert_values,
    field_types,
    parse_overrides,
    read_config_file,
    suggest,
    type_name,
    validate,
)
from qiter.dqn.config import DQNConfig
from qiter.errors import QiterError
from qiter.run_config import RunConfig


@dataclass
class Base:
    """What every toy config has; its fields and its check are inherited."""

    name: str = "toy"
    seed: int = 0

    def validate(self) -> None:
        checker(self)(bool(self.name), "name", "a non-empty name")


@dataclass
class Toy(Base):
    count: int = 3
    rate: float = 0.5
    flag: bool = False
    mode: Literal["fast", "slow"] = "fast"
    limit: float | None = None
    every: int | None = None

    def validate(self) -> None:
        super().validate()
        need = checker(self)
        need(self.count >= 1, "count", "at least 1")
        need(0 < self.rate <= 1, "rate", "in (0, 1]")


@dataclass
class Needs:
    """A config with a field without a default."""

    env_id: str
    steps: int = 10


def test_field_types_include_inherited_fields_first() -> None:
    types = field_types(Toy)
    assert list(types) == ["name", "seed", "count", "rate", "flag", "mode", "limit", "every"]
    assert types["seed"] is int and types["rate"] is float and types["mode"] == Literal["fast", "slow"]
    # A base class from another module: its string annotations resolve there.
    dqn_types = field_types(DQNConfig)
    assert list(dqn_types)[: len(field_types(RunConfig))] == list(field_types(RunConfig))
    assert dqn_types["stop_at_return"] == float | None and dqn_types["gamma"] is float
    with pytest.raises(TypeError, match="not a dataclass"):
        field_types(int)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("count", "1e3", 1000),
        ("count", "100_000", 100_000),
        ("count", 2.0, 2),
        ("count", " 7 ", 7),
        ("seed", "-3", -3),  # inherited from Base
        ("rate", "3e-4", 3e-4),
        ("rate", 1, 1.0),
        ("flag", "yes", True),
        ("flag", "Off", False),
        ("flag", 1, True),
        ("flag", True, True),
        ("mode", "SLOW", "slow"),
        ("limit", "none", None),
        ("limit", "~", None),
        ("limit", "", None),
        ("limit", None, None),
        ("limit", "2.5", 2.5),
        ("every", "null", None),
        ("every", "5", 5),
        ("name", 2048, "2048"),  # YAML reads `name: 2048` as a number
        ("name", "  padded ", "padded"),
    ],
)
def test_values_are_converted_to_the_field_type(key: str, value: Any, expected: Any) -> None:
    converted = convert_value(Toy, key, value)
    assert converted == expected and type(converted) is type(expected)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("count", "2.5", r"bad value for count: '2.5' \(expected an integer\)"),
        ("count", "many", r"bad value for count: 'many' \(expected an integer\)"),
        ("count", True, r"bad value for count: True"),
        ("count", "inf", r"bad value for count"),
        ("seed", "none", r"bad value for seed: 'none' \(expected an integer\)"),
        ("rate", "fast", r"bad value for rate: 'fast' \(expected a number\)"),
        ("rate", True, r"bad value for rate: True \(expected a number\)"),
        ("flag", "maybe", r"bad value for flag: 'maybe' \(expected a boolean \(true/false\)\)"),
        ("flag", 2, r"bad value for flag: 2"),
        (
            "mode",
            "slo",
            r"bad value for mode: 'slo' \(did you mean 'slow'\?\) \(expected one of 'fast', 'slow'\)",
        ),
        ("limit", "lots", r"bad value for limit: 'lots' \(expected a number or none\)"),
        ("every", "often", r"bad value for every: 'often' \(expected an integer or none\)"),
        ("name", None, r"bad value for name: None \(expected a string\)"),
        ("name", ["a"], r"bad value for name"),
    ],
)
def test_bad_values_name_the_key_and_the_type(key: str, value: Any, message: str) -> None:
    with pytest.raises(QiterError, match=message):
        convert_value(Toy, key, value)


def test_unknown_key_suggests_the_closest_and_lists_all() -> None:
    with pytest.raises(QiterError) as info:
        convert_values(Toy, {"count": 2, "rte": 0.1})
    message = str(info.value)
    assert "unknown config key 'rte' (did you mean 'rate'?)" in message
    assert message.endswith("Valid keys: name, seed, count, rate, flag, mode, limit, every")
    assert "\n" not in message
    with pytest.raises(QiterError, match=r"unknown config key 'zzz'\. Valid keys"):
        config_from_dict(Toy, {"zzz": 1})  # nothing close: no hint


def test_parse_overrides() -> None:
    values = parse_overrides(Toy, ["count=1e2", "flag=on", "mode=slow", "limit=none", "seed=4"])
    assert values == {"count": 100, "flag": True, "mode": "slow", "limit": None, "seed": 4}
    assert parse_overrides(Toy, "rate = 0.25") == {"rate": 0.25}  # one string, spaces around the key
    assert parse_overrides(Toy, ["every=3"]) == {"every": 3}
    assert parse_overrides(Toy, []) == {}
    # The example uses a real key of the class
    with pytest.raises(QiterError, match=r"bad override 'count': use key=value, e.g. name=toy"):
        parse_overrides(Toy, ["count"])
    with pytest.raises(QiterError, match=r"bad override '=3'"):
        parse_overrides(Toy, ["=3"])
    with pytest.raises(QiterError, match=r"did you mean 'count'"):
        parse_overrides(Toy, ["cout=3"])


def test_dashes_in_override_keys_are_underscores() -> None:
    @dataclass
    class Dashed:
        eval_episodes: int = 1

    assert parse_overrides(Dashed, ["eval-episodes=4"]) == {"eval_episodes": 4}


def test_config_from_dict_fills_defaults_and_validates() -> None:
    assert config_from_dict(Toy, {}) == Toy()
    config = config_from_dict(Toy, {"name": "mine", "count": "1e1", "mode": "Slow", "limit": "null"})
    assert config == Toy(name="mine", count=10, mode="slow")
    # The subclass's validate hook, then the base class's one it calls
    with pytest.raises(QiterError, match=r"^rate must be in \(0, 1\], got 1\.5$"):
        config_from_dict(Toy, {"rate": 1.5})
    with pytest.raises(QiterError, match=r"^count must be at least 1, got 0$"):
        config_from_dict(Toy, {"count": "0"})
    with pytest.raises(QiterError, match=r"^name must be a non-empty name, got ''$"):
        config_from_dict(Toy, {"name": ""})


def test_config_from_dict_errors() -> None:
    with pytest.raises(QiterError, match=r"my file should be a mapping of config keys to values, not list"):
        config_from_dict(Toy, ["count"], "my file")  # type: ignore[arg-type]
    with pytest.raises(QiterError, match=r"^a config lacks the config key env_id$"):
        config_from_dict(Needs, {"steps": 3})
    assert config_from_dict(Needs, {"env_id": "CartPole-v1"}) == Needs("CartPole-v1")


def test_validate_runs_the_hook_when_there_is_one() -> None:
    validate(Toy())
    validate(object())  # no validate method: nothing to check
    with pytest.raises(QiterError, match="count must be at least 1"):
        validate(Toy(count=0))


def test_config_to_dict_round_trip() -> None:
    config = Toy(name="x", count=5, rate=0.1, flag=True, mode="slow", limit=2.0, every=None)
    data = config_to_dict(config)
    assert list(data) == list(field_types(Toy))
    assert config_from_dict(Toy, data) == config


def test_read_config_file(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text("# a comment\ncount: 1e3\nmode: slow\n")
    raw = read_config_file(path)
    assert raw == {"count": "1e3", "mode": "slow"}  # YAML 1.1 reads 1e3 as a string: convert_values fixes it
    assert convert_values(Toy, raw, f"config file {path}") == {"count": 1000, "mode": "slow"}
    with pytest.raises(QiterError, match="does not exist"):
        read_config_file(tmp_path / "missing.yaml")
    path.write_text("count: [1\n")
    with pytest.raises(QiterError, match="not valid YAML") as info:
        read_config_file(path)
    assert "\n" not in str(info.value)  # the CLI prints one line
    path.write_text("- 1\n")
    with pytest.raises(QiterError, match="mapping"):
        read_config_file(path)
    path.write_text("")
    assert read_config_file(path) == {}


def test_type_names_and_suggestions() -> None:
    assert type_name(int) == "an integer"
    assert type_name(float | None) == "a number or none"
    assert type_name(Literal["a", "b"]) == "one of 'a', 'b'"
    assert suggest("huberr", ["mse", "huber"]) == " (did you mean 'huber'?)"
    assert suggest("xyz", ["mse", "huber"]) == ""


def test_checker_message() -> None:
    need = checker(Toy(rate=2.0))
    need(True, "rate", "in (0, 1]")
    with pytest.raises(QiterError, match=r"^rate must be in \(0, 1\], got 2\.0$"):
        need(False, "rate", "in (0, 1]")


def test_integers_from_the_command_line_take_scientific_notation() -> None:
    from qiter.config import parse_int

    assert parse_int("1e5") == 100_000 and parse_int("100_000") == 100_000 and parse_int("7") == 7
    for text in ("1.5", "1e-3", "ten", "inf"):
        with pytest.raises(QiterError, match="is not an integer"):
            parse_int(text)


def test_env_kwargs_are_typed_like_set_and_kept_as_a_mapping() -> None:
    from qiter.config import parse_keyword_arguments
    from qiter.run_config import RunConfig

    kwargs = parse_keyword_arguments(
        ["enable_wind=true", "wind_power=15.5", "map_name=8x8", "n=3", "sizes=[1, 2]", "x=none"]
    )
    assert kwargs == {
        "enable_wind": True,
        "wind_power": 15.5,
        "map_name": "8x8",
        "n": 3,
        "sizes": [1, 2],
        "x": None,
    }
    with pytest.raises(QiterError, match="use key=value"):
        parse_keyword_arguments(["enable_wind"])
    # The config field: from --set as a YAML mapping, from a config file or checkpoint as a mapping.
    assert parse_overrides(RunConfig, ["env_kwargs={enable_wind: true}"]) == {
        "env_kwargs": {"enable_wind": True}
    }
    assert config_from_dict(RunConfig, {"env_kwargs": {"g": 9.8}}).env_kwargs == {"g": 9.8}
    with pytest.raises(QiterError, match="bad value for env_kwargs"):
        parse_overrides(RunConfig, ["env_kwargs=[1, 2]"])
    round_trip = config_from_dict(RunConfig, config_to_dict(RunConfig(env_kwargs={"is_slippery": False})))
    assert round_trip.env_kwargs == {"is_slippery": False}


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seeds_outside_numpys_range_are_refused(seed: int) -> None:
    from qiter.run_config import RunConfig

    with pytest.raises(QiterError, match=r"seed must be an integer in \[0, 4294967295\]"):
        config_from_dict(RunConfig, {"seed": seed})
