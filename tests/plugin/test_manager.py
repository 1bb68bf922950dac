"""Loading plugins: built-ins through entry points, extras through EDGESDK_PLUGINS, failures isolated."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

import edgesdk
from edgesdk.errors import ProfileError
from edgesdk.plugin import manager as plugin_manager
from tests.conftest import BUILTIN_DEVICES

PROFILE_PLUGIN = """
from pathlib import Path
from edgesdk.plugin import hookimpl

HERE = Path(__file__).parent

@hookimpl
def edgesdk_device_profiles():
    (HERE / "toaster.yaml").write_text("id: toaster\\nextends: mcu\\nname: Smart toaster\\n")
    return [HERE / "toaster.yaml"]
"""


def infos_by_name():
    return {info.name: info for info in edgesdk.plugins()}


def test_builtins_load_through_the_entry_point_group():
    infos = infos_by_name()
    for device_id in BUILTIN_DEVICES:
        info = infos[device_id]
        assert info.builtin is True
        assert info.version == edgesdk.__version__
        assert info.hooks == ("edgesdk_backends", "edgesdk_device_profiles")
        assert info.error is None


def test_extra_plugin_module_contributes_a_yaml_profile(make_plugin):
    name = make_plugin(PROFILE_PLUGIN)
    toaster = edgesdk.get_device("toaster")
    assert toaster.name == "Smart toaster"
    assert toaster.source.plugin == name
    assert toaster.compute_units == edgesdk.get_device("mcu").compute_units
    assert infos_by_name()[name].builtin is False


def test_plugin_returning_a_profile_object(make_plugin):
    name = make_plugin(
        """
        from edgesdk.plugin import DeviceProfile, hookimpl
        from tests.devices.test_profile import MINIMAL

        @hookimpl
        def edgesdk_device_profiles():
            return [DeviceProfile.model_validate(MINIMAL)]
        """
    )
    assert edgesdk.get_device("tiny").source.plugin == name


def test_profile_hook_that_looks_devices_up_is_stopped(make_plugin, caplog):
    name = make_plugin(
        """
        from edgesdk import get_device
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_device_profiles():
            return [get_device("pc").model_copy(update={"id": "pc-clone"})]
        """
    )
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        assert "pc-clone" not in [profile.id for profile in edgesdk.devices()]
    assert f"plugin '{name}' skipped, error in edgesdk_device_profiles: ProfileError: edgesdk_device_profiles must not look devices up" in caplog.text


def test_plugin_that_fails_to_import_is_named_and_skipped(make_plugin, caplog):
    broken = make_plugin("raise RuntimeError('no licence server')\n", stem="broken")
    good = make_plugin(PROFILE_PLUGIN)
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        infos = infos_by_name()
    assert infos[broken].error == "failed to import: RuntimeError: no licence server"
    assert infos[broken].hooks == ()
    assert f"plugin '{broken}' skipped, failed to import: RuntimeError: no licence server" in caplog.text
    assert infos[good].error is None
    assert "toaster" in [profile.id for profile in edgesdk.devices()]


def test_misspelt_hook_is_rejected_by_name(make_plugin):
    name = make_plugin(
        """
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_device_profile():
            return []
        """
    )
    info = infos_by_name()[name]
    assert info.error.startswith("invalid plugin: PluginValidationError")
    assert "edgesdk_device_profile" in info.error
    assert len(edgesdk.devices()) == len(BUILTIN_DEVICES)


def test_hook_that_raises_or_returns_junk_is_skipped(make_plugin, caplog):
    raising = make_plugin(
        """
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_device_profiles():
            raise ValueError("boom")
        """
    )
    junk = make_plugin(
        """
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_device_profiles():
            return "phone.yaml"
        """
    )
    weird_item = make_plugin(
        """
        from edgesdk.plugin import hookimpl

        @hookimpl
        def edgesdk_device_profiles():
            return [42]
        """
    )
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        ids = [profile.id for profile in edgesdk.devices()]
    assert ids == [profile.id for profile in edgesdk.devices()] and len(ids) == len(BUILTIN_DEVICES)
    assert f"plugin '{raising}' skipped, error in edgesdk_device_profiles: ValueError: boom" in caplog.text
    assert f"plugin '{junk}' skipped, error in edgesdk_device_profiles: TypeError: returned str" in caplog.text
    assert f"plugin '{weird_item}': profile skipped, got 42, expected a DeviceProfile" in caplog.text


def test_plugin_profile_that_is_invalid_is_skipped_and_a_duplicate_id_names_both_plugins(make_plugin, caplog):
    name = make_plugin(
        """
        from pathlib import Path
        from edgesdk.plugin import hookimpl

        HERE = Path(__file__).parent

        @hookimpl
        def edgesdk_device_profiles():
            (HERE / "bad.yaml").write_text("extends: mcu\\nmemory: {dram_bytes: -1}\\n")
            (HERE / "dup.yaml").write_text("id: phone\\nextends: mcu\\n")
            return [HERE / "bad.yaml"] + ([HERE / "dup.yaml"] if (HERE / "with-dup").exists() else [])
        """
    )
    with caplog.at_level(logging.WARNING, logger="edgesdk"):
        profiles = {profile.id: profile for profile in edgesdk.devices()}
    assert "bad" not in profiles and profiles["phone"].source.plugin == "phone"
    assert f"plugin '{name}': profile skipped, profile " in caplog.text
    assert "memory.dram_bytes: Input should be greater than 0" in caplog.text
    (Path(sys.modules[name].__file__).parent / "with-dup").touch()
    with pytest.raises(ProfileError, match=r"device id 'phone' is defined twice, by plugins '(phone|plugin_\w+)' and '(phone|plugin_\w+)'") as caught:
        edgesdk.devices()
    assert name in str(caught.value) and "'phone'" in str(caught.value)


def test_every_hook_is_collected_per_plugin(make_plugin):
    name = make_plugin(
        """
        from pathlib import Path
        from edgesdk.plugin import Backend, Pass, Template, ZigCC, hookimpl

        class Identity(Pass):
            name = "identity"
            config_model = None
            def run(self, module, config):
                return module

        @hookimpl
        def edgesdk_backends():
            return [Backend(name="pc", toolchain=ZigCC(target="x86_64-linux-gnu"))]

        @hookimpl
        def edgesdk_passes():
            return [Identity()]

        @hookimpl
        def edgesdk_templates():
            return [Template(name="hello", kind="app", description="Hello app", path=Path("."))]
        """
    )
    (backend,) = [item for plugin, item in plugin_manager.collect("edgesdk_backends") if plugin == name]
    assert backend.serves(edgesdk.get_device("pc"))
    assert not backend.serves(edgesdk.get_device("mcu"))
    assert [item.name for _, item in plugin_manager.collect("edgesdk_passes")] == ["identity"]
    assert [item.name for plugin, item in plugin_manager.collect("edgesdk_templates") if plugin == name] == ["hello"]
    assert set(infos_by_name()[name].hooks) == {"edgesdk_backends", "edgesdk_passes", "edgesdk_templates"}


def test_trace_switch_prints_hook_calls(make_plugin, monkeypatch, capsys):
    monkeypatch.setenv("EDGESDK_TRACE_PLUGINS", "1")
    plugin_manager.reset()
    edgesdk.devices()
    err = capsys.readouterr().err
    assert "edgesdk trace: phone.edgesdk_device_profiles() -> [" in err


BACKEND_PLUGIN = """
from edgesdk.plugin import Backend, ZigCC, hookimpl

@hookimpl{marker}
def edgesdk_backends():
    return [Backend(name="{name}", toolchain=ZigCC(target="aarch64-linux-gnu"))]
"""


def test_hooks_go_through_pluggy_so_tryfirst_and_wrappers_apply(make_plugin):
    first = make_plugin(BACKEND_PLUGIN.format(marker="(tryfirst=True)", name="early"))  # registered first: pluggy would call it last
    make_plugin(BACKEND_PLUGIN.format(marker="", name="plain"))
    wrapper = make_plugin(
        """
        from edgesdk.plugin import hookimpl

        SEEN = []

        @hookimpl(wrapper=True)
        def edgesdk_backends():
            result = yield
            SEEN.append([backend.name for backend in result[0]])
            return result
        """
    )
    names = [item.name for _, item in plugin_manager.collect("edgesdk_backends")]
    assert names.index("early") < names.index("plain")
    assert ["early"] in sys.modules[wrapper].SEEN and ["plain"] in sys.modules[wrapper].SEEN  # it wrapped each plugin's call
    assert [plugin for plugin, item in plugin_manager.collect("edgesdk_backends") if item.name == "early"] == [first]


def test_two_plugins_serving_one_backend_name_is_an_error_naming_both(make_plugin):
    from edgesdk.verbs.deploy import find_backend

    first = make_plugin(BACKEND_PLUGIN.format(marker="", name="phone"))
    with pytest.raises(edgesdk.UserInputError, match=r"backend 'phone' is provided by two plugins: ") as caught:
        find_backend(edgesdk.get_device("phone"))
    named = str(caught.value).rsplit(": ", 1)[1].split(" and ")
    assert sorted(named) == sorted([first, "phone"])
