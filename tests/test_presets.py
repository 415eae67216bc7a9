"""DQN presets, typed overrides and config resolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from qiter import config as typed
from qiter import runs
from qiter.cli import main
from qiter.config import config_to_dict
from qiter.dqn.config import DQNConfig
from qiter.errors import QiterError
from qiter.resolve import (
    describe_preset,
    list_all_presets,
    list_presets,
    load_preset,
    preset_text,
    resolve_config,
    resume_config,
)
from qiter.run_config import RunConfig


def config_from_dict(values: object) -> DQNConfig:
    return typed.config_from_dict(DQNConfig, values)  # type: ignore[arg-type]


def parse_overrides(overrides: list[str]) -> dict[str, object]:
    return typed.parse_overrides(DQNConfig, overrides)


EXPECTED_PRESETS = {
    "Acrobot-v1",
    "CartPole-v1",
    "FlappyBird-v0",
    "LunarLander-v3",
    "LunarLander-v3-rlberry",
    "MountainCar-v0",
    "CartPole-v1-rainbow-lite",
    "CartPole-v1-stable",
}


def test_shipped_presets_are_listed() -> None:
    assert set(list_presets()) >= EXPECTED_PRESETS
    assert list_presets() == sorted(list_presets())


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_loads_into_a_valid_config(name: str) -> None:
    raw = load_preset(name)
    assert raw, "a preset sets at least one value"
    config = config_from_dict(raw)
    config.validate()
    assert config.env_id == raw["env_id"]
    assert resolve_config(preset=name) == config
    # Every preset says where its values come from.
    path = Path(__file__).parents[1] / "src" / "qiter" / "presets" / f"{name}.yaml"
    assert path.read_text().startswith("# ")


def test_cartpole_preset_is_the_seed_call() -> None:
    config = resolve_config("CartPole-v1")  # the env id's preset is used by default
    expected = {
        "replay_buffer_size": 100_000,
        "target_network_update_interval": 10,
        "learning_starts": 1000,
        "exploration_initial_eps": 1.0,
        "exploration_final_eps": 0.04,
        "exploration_fraction": 0.1,
        "n_timesteps": 80_000,
        "update_interval": 2,
        "learning_rate": 1e-3,
        "batch_size": 64,
        "gamma": 0.99,
        "n_eval_episodes": 10,
        "evaluation_interval": 5000,
        "seed": 2022,
    }
    assert {k: getattr(config, k) for k in expected} == expected


def test_rlberry_preset() -> None:
    config = resolve_config(preset="LunarLander-v3-rlberry")
    assert config.env_id == "LunarLander-v3"
    assert (config.gamma, config.batch_size, config.replay_buffer_size) == (0.999, 64, 10_000)
    assert (config.target_network_update_interval, config.target_update_unit) == (30, "episodes")
    assert config.exploration_schedule == "exponential"
    assert (config.exploration_initial_eps, config.exploration_final_eps) == (0.7, 0.001)
    assert config.exploration_decay_episodes == 100
    assert (config.n_hidden_units, config.n_hidden_layers, config.learning_rate) == (128, 1, 1e-3)
    assert config.stop_at_return == 199


def test_env_without_preset_uses_defaults() -> None:
    config = resolve_config("Pendulum-v1")
    assert config == DQNConfig(env_id="Pendulum-v1")
    assert resolve_config() == DQNConfig()


def test_unknown_preset_lists_names() -> None:
    with pytest.raises(
        QiterError, match=r"unknown preset 'CartPole-v2' \(did you mean 'CartPole-v1'\?\).*Acrobot-v1"
    ):
        load_preset("CartPole-v2")
    with pytest.raises(QiterError, match="unknown preset"):
        resolve_config("CartPole-v1", preset="nope")
    assert load_preset("cartpole-v1") == load_preset("CartPole-v1")


def test_overrides_typed_conversion() -> None:
    values = parse_overrides(
        [
            "n_timesteps=1e5",
            "replay_buffer_size=100_000",
            "batch_size=32",
            "learning_rate=3e-4",
            "gamma=1",
            "dueling=true",
            "double_dqn=0",
            "prioritized_replay=Yes",
            "loss=huber",
            "learning_rate_final=none",
            "max_grad_norm=10",
            "stop_at_return=null",
            "checkpoint_interval=5000",
            "device=cuda:0",
            "exploration-fraction=0.2",  # dashes are accepted for underscores
        ]
    )
    assert values == {
        "n_timesteps": 100_000,
        "replay_buffer_size": 100_000,
        "batch_size": 32,
        "learning_rate": 3e-4,
        "gamma": 1.0,
        "dueling": True,
        "double_dqn": False,
        "prioritized_replay": True,
        "loss": "huber",
        "learning_rate_final": None,
        "max_grad_norm": 10.0,
        "stop_at_return": None,
        "checkpoint_interval": 5000,
        "device": "cuda:0",
        "exploration_fraction": 0.2,
    }
    assert type(values["n_timesteps"]) is int and type(values["gamma"]) is float


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("n_timesteps=1.5e3x", r"bad value for n_timesteps: '1.5e3x' \(expected an integer\)"),
        ("n_timesteps=10.5", r"bad value for n_timesteps.*integer"),
        ("learning_rate=fast", r"bad value for learning_rate.*a number"),
        ("dueling=maybe", r"bad value for dueling.*boolean"),
        ("checkpoint_interval=often", r"bad value for checkpoint_interval.*an integer or none"),
        ("seed=none", r"bad value for seed"),
        (
            "loss=hubr",
            r"bad value for loss: 'hubr' \(did you mean 'huber'\?\) \(expected one of 'mse', 'huber'\)",
        ),
        ("activation=sigmoid", r"expected one of 'relu', 'tanh', 'elu', 'gelu'"),
        ("learning_rate", r"bad override 'learning_rate': use key=value"),
        ("=3", r"bad override"),
    ],
)
def test_bad_override_values(override: str, message: str) -> None:
    with pytest.raises(QiterError, match=message):
        parse_overrides([override])


def test_unknown_key_lists_valid_keys_with_suggestion() -> None:
    with pytest.raises(QiterError) as info:
        resolve_config("CartPole-v1", overrides=["learning_rat=1e-3"])
    message = str(info.value)
    assert "unknown config key 'learning_rat'" in message
    assert "did you mean 'learning_rate'?" in message
    assert "Valid keys:" in message and "replay_buffer_size" in message and "exploration_fraction" in message
    with pytest.raises(QiterError, match=r"unknown config key 'buffer_size'.*Valid keys"):
        config_from_dict({"buffer_size": 10})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("gamma=0", r"gamma must be in \(0, 1\]"),
        ("gamma=1.5", r"gamma must be in \(0, 1\]"),
        ("tau=0", r"tau must be in \(0, 1\]"),
        ("exploration_final_eps=1.2", r"exploration_final_eps must be in \[0, 1\]"),
        ("eval_exploration_rate=-0.1", r"eval_exploration_rate must be in \[0, 1\]"),
        ("batch_size=0", "batch_size must be at least 1"),
        ("replay_buffer_size=-5", "replay_buffer_size must be at least 1"),
        ("n_steps=0", "n_steps must be at least 1"),
        ("learning_rate=0", "learning_rate must be positive"),
        ("target_network_update_interval=0", "target_network_update_interval must be at least 1"),
        ("device=gpu", "device must be a torch device"),
    ],
)
def test_invariants(override: str, message: str) -> None:
    with pytest.raises(QiterError, match=message):
        resolve_config("CartPole-v1", overrides=[override])


def test_evaluation_can_be_turned_off() -> None:
    config = resolve_config(overrides=["evaluation_interval=0"])
    assert config.evaluation_interval == 0 and config.checkpoint_interval is None
    with pytest.raises(QiterError, match="checkpoint_interval must be at least 1"):
        resolve_config(overrides=["checkpoint_interval=0"])


def test_precedence_preset_file_overrides_seed(tmp_path: Path) -> None:
    config_file = tmp_path / "my.yaml"
    # YAML 1.1 reads 5e-4 as a string and 1e5 too: both are converted by the field types.
    config_file.write_text("learning_rate: 5e-4\nbatch_size: 32\nseed: 11\nn_timesteps: 1e5\ngamma: 0.9\n")
    config = resolve_config(
        "CartPole-v1", config_file=config_file, overrides=["batch_size=16", "seed=12", "gamma=0.95"], seed=13
    )
    assert config.replay_buffer_size == 100_000  # from the preset
    assert config.learning_rate == 5e-4 and config.n_timesteps == 100_000  # file beats preset
    assert config.batch_size == 16 and config.gamma == 0.95  # overrides beat the file
    assert config.seed == 13  # --seed beats everything
    assert config.target_network_update_interval == 10  # preset value untouched by the later layers


def test_env_id_argument_beats_preset_env() -> None:
    config = resolve_config("Acrobot-v1", preset="CartPole-v1")
    assert config.env_id == "Acrobot-v1" and config.target_network_update_interval == 10
    assert resolve_config("CartPole-v1", overrides=["env_id=Acrobot-v1"]).env_id == "Acrobot-v1"


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(QiterError, match="does not exist"):
        resolve_config(config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(QiterError, match="mapping"):
        resolve_config(config_file=bad)
    bad.write_text("gamma: [0.9\n")
    with pytest.raises(QiterError, match="not valid YAML"):
        resolve_config(config_file=bad)
    bad.write_text("gama: 0.9\n")
    with pytest.raises(QiterError, match="did you mean 'gamma'"):
        resolve_config(config_file=bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert resolve_config(config_file=empty) == DQNConfig()


def test_config_dict_round_trip(tmp_path: Path) -> None:
    config = resolve_config(
        preset="LunarLander-v3-rlberry", overrides=["learning_rate_final=1e-5", "dueling=true"]
    )
    data = config_to_dict(config)
    assert list(data) == [f for f in DQNConfig.__dataclass_fields__]
    assert config_from_dict(data) == config
    # Through config.yaml, as a run folder stores it.
    runs.save_config(tmp_path, data)
    assert config_from_dict(runs.load_run_config(tmp_path)) == config
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["learning_rate_final"] == 1e-5
    # Through a checkpoint.
    runs.save_checkpoint(tmp_path / "c.pt", {"config": data})
    assert config_from_dict(runs.load_checkpoint(tmp_path / "c.pt")["config"]) == config
    with pytest.raises(QiterError, match="mapping"):
        config_from_dict(["gamma"])  # type: ignore[arg-type]


def test_validate_config_is_the_config_method() -> None:
    with pytest.raises(QiterError, match=r"gamma must be in \(0, 1\], got 1\.5"):
        DQNConfig(gamma=1.5).validate()
    # The run's own settings are checked by RunConfig.validate, which DQNConfig.validate calls.
    with pytest.raises(QiterError, match="n_envs must be at least 1, got 0"):
        DQNConfig(n_envs=0).validate()
    DQNConfig().validate()


@dataclass
class _OtherConfig(RunConfig):
    """Another algorithm's config, to show resolve_config is not tied to DQN."""

    width: int = 8


def test_resolve_config_for_another_config_class(tmp_path: Path) -> None:
    (tmp_path / "Pendulum-v1.yaml").write_text("# Another algorithm's preset.\nwidth: 1e2\nseed: 5\n")
    config = resolve_config("Pendulum-v1", overrides=["n_envs=2"], cls=_OtherConfig, presets=tmp_path)
    assert config == _OtherConfig(env_id="Pendulum-v1", seed=5, n_envs=2, width=100)
    assert describe_preset("Pendulum-v1", tmp_path) == "Another algorithm's preset"
    assert list_presets(tmp_path) == ["Pendulum-v1"]
    # The DQN presets are not looked up for it, and its own keys are the valid ones.
    assert resolve_config("CartPole-v1", cls=_OtherConfig, presets=tmp_path).width == 8
    with pytest.raises(QiterError, match=r"unknown config key 'learning_rate'.*Valid keys: env_id.*width"):
        resolve_config(overrides=["learning_rate=0.9"], cls=_OtherConfig, presets=tmp_path)
    with pytest.raises(QiterError, match="n_timesteps must be at least 1"):
        resolve_config(overrides=["n_timesteps=0"], cls=_OtherConfig, presets=tmp_path)


# Defect 11: `qiter presets` listed names only, and `qiter presets NAME` printed JSON without the comments.


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_has_a_one_line_description(name: str) -> None:
    description = describe_preset(name)
    assert description and not description.startswith("#") and "\n" not in description
    assert len(description) <= 100, "a description fits on one line beside the name"
    first_line = preset_text(name).splitlines()[0]
    assert first_line.startswith("# ") and description in first_line


def test_presets_command_lists_descriptions_in_two_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = list_all_presets()  # the DQN presets, then the other algorithms' as algo/NAME
    assert [line.split()[0] for line in lines] == names
    column = max(map(len, names)) + 2
    for name, line in zip(names, lines):
        assert line[:column].rstrip() == name
        assert line[column:] == describe_preset(name)  # every description starts in the same column


def test_presets_command_prints_the_yaml_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "CartPole-v1"]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out) == load_preset("CartPole-v1")
    assert out == preset_text("CartPole-v1")
    assert any(line.startswith("#") for line in out.splitlines()), "the comments say where values come from"
    assert "n_timesteps: 80000" in out and "{" not in out  # YAML, not JSON
    assert main(["presets", "cartpole-v1"]) == 0  # any letter case, as --preset takes it
    assert capsys.readouterr().out == out


def test_presets_command_unknown_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["presets", "CartPole-v2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qiter: error: unknown preset 'CartPole-v2' (did you mean 'CartPole-v1'?)")


def test_resolve_config_by_algorithm_name() -> None:
    # Each algorithm reads its own config class and its own presets folder.
    config = resolve_config("Pendulum-v1", algo="td3")
    assert type(config).__name__ == "TD3Config"
    assert config.env_id == "Pendulum-v1"
    with pytest.raises(QiterError, match="unknown algorithm 'nope'"):
        resolve_config("Pendulum-v1", algo="nope")


def test_resume_config_layers_changes_on_the_runs_own_config(tmp_path: Path) -> None:
    config = resolve_config("CartPole-v1", overrides=["n_timesteps=3000", "learning_rate=1e-3"])
    runs.save_config(tmp_path, config_to_dict(config))
    runs.save_checkpoint(tmp_path / runs.CHECKPOINT_DIR / "latest.pt", {"algo": "dqn"})
    resumed = resume_config(tmp_path, overrides=["n_timesteps=5e3"], seed=4)
    assert isinstance(resumed, DQNConfig)
    assert (resumed.n_timesteps, resumed.seed, resumed.learning_rate) == (5000, 4, 1e-3)
    with pytest.raises(QiterError, match="unknown config key 'learning_rat'"):
        resume_config(tmp_path, overrides=["learning_rat=1"])
    with pytest.raises(QiterError, match="no checkpoint to resume from"):
        resume_config(tmp_path / "elsewhere")
