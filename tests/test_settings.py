import json

import pytest

from rap.errors import ConfigError
from rap.settings import resolve


def test_defaults_come_from_the_offline_profile(rap_home):
    resolved = resolve(environ={"RAP_HOME": str(rap_home)})
    assert resolved.profile == "offline"
    assert resolved.settings.encoder == "offline:efficientnet-lite0-int8"
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


def test_the_offline_profile_is_the_built_in_defaults(rap_home):
    from rap.settings import BUILTIN_PROFILES, Settings

    assert BUILTIN_PROFILES["offline"] == {name: getattr(Settings(), name) for name in BUILTIN_PROFILES["offline"]}
    assert resolve(environ={"RAP_HOME": str(rap_home)}).settings == Settings(home=rap_home)


def test_library_classes_default_to_the_settings(store):
    from rap.assistant import Assistant
    from rap.retrieval import Retriever
    from rap.settings import Settings

    retriever = Retriever(store)
    defaults = Settings()
    assert (retriever._detector, retriever.top_k, retriever.per_region_k) == (defaults.detector, defaults.top_k, defaults.per_region_k)
    assert Assistant(store)._generator == defaults.generator


def _cli(capsys, *args):
    from rap.cli import run

    code = run([str(a) for a in args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize(
    ("flags", "how"),
    [
        pytest.param([], "add", marks=pytest.mark.slow, id="no-flags"),
        pytest.param(["--encoder", "tiny"], "add", id="encoder-only"),
        pytest.param(["--encoder", "tiny"], "import", id="import"),
    ],
)
def test_a_store_made_by_the_cli_gets_the_default_face_analyzer(capsys, photos, tmp_path, flags, how):
    """The default profile's faces (dlib) reach a store that `rap concept add` or `rap import` creates with no --faces."""
    if how == "add":
        _cli(capsys, *flags, "concept", "add", "eileen", "-i", photos / "astronaut.jpg", "-c", "person")
    else:
        (tmp_path / "people" / "eileen").mkdir(parents=True)
        (tmp_path / "people" / "eileen" / "a.jpg").write_bytes((photos / "astronaut.jpg").read_bytes())
        _cli(capsys, *flags, "import", tmp_path / "people", "-c", "person")
    shown = json.loads(_cli(capsys, *flags, "concept", "show", "eileen", "--json"))
    assert shown["images"][0]["face_box"] is not None
    info = json.loads(_cli(capsys, *flags, "info", "--json"))
    assert info["faces"] == "dlib" and info["indexes"]["face"]["vectors"] == 1
    assert "faces: dlib" in _cli(capsys, *flags, "info")


@pytest.mark.slow
def test_settings_given_reach_the_encoder_the_face_analyzer_and_the_index(tmp_path, photos, monkeypatch):
    """A Settings object handed down (as create_app and the CLI do) is what the models and the
    index run with, whatever the environment says: nothing below them resolves settings again."""
    import faiss

    from rap.images import load_image
    from rap.server.runtime import SharedModels
    from rap.settings import Settings
    from rap.store.local import LocalConceptStore

    for name, value in {"CPU_THREADS": "1", "FACE_SIDE": "999", "SEARCH_THREADS": "1", "ENCODER_RUNTIME": "torch"}.items():
        monkeypatch.setenv(f"RAP_{name}", value)  # what a resolve() below would wrongly pick up
    settings = Settings(
        home=tmp_path / "home", cpu_threads=3, face_side=333, search_threads=2, encoder_runtime="onnxruntime",
        encoder="offline:efficientnet-lite0", faces="dlib",
    )
    told: list[int] = []
    set_threads = faiss.omp_set_num_threads
    monkeypatch.setattr(faiss, "omp_set_num_threads", lambda count: (told.append(count), set_threads(count))[1])
    with LocalConceptStore(tmp_path / "store", settings=settings) as store:
        encoder, analyzer = store.embedder.encoder, store.embedder.face_analyzer
        assert (encoder.runtime, encoder._threads, analyzer.side) == ("onnxruntime", 3, 333)
        assert encoder.model_file.parent == settings.home / "cache"  # the exported model is kept in that home
        store.add("bo", [photos / "dog_00.jpg"])
        [[hit]] = store.search("image", store.embedder.embed([load_image(photos / "dog_01.jpg").image]), 1)
        assert hit.concept == "bo" and told[0] == 2  # FAISS searched on search_threads
    models = SharedModels(settings)  # what create_app(settings) holds
    assert models.embedder.face_analyzer.side == 333 and models.embedder.encoder._threads == 3


def test_every_setting_is_read_outside_the_settings_module():
    """A setting no code reads is a promise nothing keeps: each field is read as an attribute
    (``settings.top_k``) somewhere in the package, or through a Settings property that is."""
    import inspect
    import re
    from pathlib import Path

    import rap
    from rap.settings import Settings

    package = Path(rap.__file__).parent
    code = "\n".join(p.read_text() for p in package.rglob("*.py") if p.name != "settings.py")
    read = {name for name in Settings.model_fields if re.search(rf"\.{name}\b", code)}
    for name, member in inspect.getmembers(Settings, lambda m: isinstance(m, property)):
        if re.search(rf"\.{name}\b", code):
            read |= set(re.findall(r"self\.(\w+)", inspect.getsource(member.fget)))
    assert set(Settings.model_fields) - read == set()


def test_only_the_command_line_the_server_and_the_library_entry_resolve_settings():
    """Settings travel down: a module below the CLI and the server that resolved them itself would
    read the environment behind its caller's back, and a Settings given to create_app would not reach it."""
    import re
    from pathlib import Path

    import rap

    package = Path(rap.__file__).parent
    allowed = {"settings.py", "__init__.py", "cli/context.py", "server/app.py"}
    resolving = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if re.search(r"from rap\.settings import[^\n]*\bresolve\b", path.read_text())
    }
    assert resolving <= allowed, resolving - allowed
