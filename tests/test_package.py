"""The installed package: the console script, the shipped assets, settings.ini as the single source."""
import configparser
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_console_script_help():
    exe = Path(sys.executable).parent / "m1"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_settings_and_version_agree():
    import m1
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "settings.ini")
    d = cfg["DEFAULT"]
    assert d["lib_name"] == "m1" and d["allowed_cell_metadata_keys"] == "tags"
    assert d["version"] == m1.__version__
    assert "m1=m1.cli:main" in d["console_scripts"]


def test_assets_ship_with_package():
    import m1.data
    demo = json.loads((m1.data.ASSETS / "demo_questions.json").read_text())
    assert len(demo) >= 100
    mesh = json.loads((m1.data.ASSETS / "mesh_qualifiers.json").read_text())
    assert [m["code"] for m in mesh] == [f"{i:02d}" for i in range(76)]
