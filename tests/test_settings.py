import pytest

from rap.errors import ConfigError
from rap.settings import resolve


def test_defaults_come_from_the_offline_profile(rap_home):
    resolved = resolve(environ={"RAP_HOME": str(rap_home)})
    assert resolved.profile == "offline"
    assert resolved.settings.encoder == "offline:efficientnet-lite0"
    assert resolved.settings.store_path == rap_home / "store"
    assert not resolved.explicit("encoder")
    assert resolved.sources["home"] == "environment"


def test_layers_and_sources(rap_home):
    rap_home.mkdir(parents=True)
    (rap_home / "config.toml").write_text(
        'profile = "mine"\ntop_k = 4\n[profiles.mine]\nencoder = "clip:/models/clip"\ndetector = "none"\n'
    )
    env = {"RAP_HOME": str(rap_home), "RAP_DETECTOR": "multiscale"}
    resolved = resolve({"top_k": 7, "db": None}, environ=env)
    assert resolved.settings.encoder == "clip:/models/clip"
    assert resolved.sources["encoder"] == "profile mine (config file)"
    assert resolved.settings.detector == "multiscale" and resolved.sources["detector"] == "environment"
    assert resolved.settings.top_k == 7 and resolved.sources["top_k"] == "argument"
    assert resolved.explicit("encoder")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("top_k = ", "config file"),
        ("top_k = 0", "top_k"),
        ("colour = 'red'", "unknown setting 'colour'"),
        ("profile = 'nope'", "unknown profile 'nope'"),
    ],
)
def test_broken_config_is_one_clear_error(rap_home, config, message):
    rap_home.mkdir(parents=True)
    (rap_home / "config.toml").write_text(config)
    with pytest.raises(ConfigError, match=message):
        resolve(environ={"RAP_HOME": str(rap_home)})


def test_threshold_from_environment(rap_home):
    env = {"RAP_HOME": str(rap_home), "RAP_THRESHOLD": "inf"}
    assert resolve(environ=env).settings.threshold == float("inf")
