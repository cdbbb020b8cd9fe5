"""``make lab``'s JupyterLab defaults (no server, no browser; tests/test_lab_browser.py drives a real one)."""
import json

import pytest

from dwt_lib import lab


def test_lab_defaults_disable_comms_over_subshells_and_keep_other_settings(tmp_path):
    path = tmp_path / "labconfig" / "default_setting_overrides.json"
    path.parent.mkdir()
    plugin, key = lab.SUBSHELL_SETTING
    mine = {"@jupyterlab/apputils-extension:themes": {"theme": "JupyterLab Dark"},
            plugin: {"kernelInfoTimeout": 30, key: "perComm"}}
    path.write_text(json.dumps(mine))
    assert lab.set_lab_defaults(tmp_path) == path
    got = json.loads(path.read_text())
    assert got[plugin] == {"kernelInfoTimeout": 30, key: "disabled"}
    assert got["@jupyterlab/apputils-extension:themes"] == {"theme": "JupyterLab Dark"}
    assert [p.name for p in path.parent.iterdir()] == [path.name]          # no temp file left
    lab.set_lab_defaults(tmp_path)                      # idempotent
    assert json.loads(path.read_text()) == got


def test_lab_defaults_name_a_broken_file_and_leave_it(tmp_path):
    path = tmp_path / "labconfig" / "default_setting_overrides.json"
    path.parent.mkdir()
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"default_setting_overrides.json is not valid JSON.*fix or delete it"):
        lab.set_lab_defaults(tmp_path)
    assert path.read_text() == "{not json"


def test_lab_defaults_refuse_a_file_that_is_not_settings_objects(tmp_path):
    path = tmp_path / "labconfig" / "default_setting_overrides.json"
    path.parent.mkdir()
    path.write_text("[]")
    with pytest.raises(ValueError, match=r"expected a JSON object of plugin ids -> settings objects.*fix or delete"):
        lab.set_lab_defaults(tmp_path)
    assert path.read_text() == "[]"
